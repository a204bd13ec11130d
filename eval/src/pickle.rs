//! A minimal, safe reader for insightface's verification `.bin` files (`lfw.bin`, `cfp_fp.bin`,
//! `agedb_30.bin`): a pickle of `(list of JPEG byte strings, list of booleans)`.
//!
//! Nothing is ever executed. The reader understands the handful of opcodes such files use
//! (protocols 2 to 5, written by Python 2 or 3) and recognises a few callables by name,
//! interpreting them itself: `_codecs.encode(str, 'latin1')` (how Python 3 writes `bytes` at
//! protocol 2), `bytes()` / `__builtin__.bytes()` (empty bytes), numpy's boolean scalars
//! (`numpy.core.multiarray.scalar(dtype('b1'), b'\x01')`), and one-dimensional numpy boolean
//! arrays, which insightface's own scripts write for `issame`
//! (`pickle.dump((bins, np.array(issame_list)), f)`): `numpy.core.multiarray._reconstruct`
//! followed by BUILD with `(1, shape, dtype('b1'), fortran, bytes)` at protocols 2 to 4, and
//! `numpy.core.numeric._frombuffer(bytearray, dtype('b1'), shape, order)` at protocol 5 (numpy
//! 2 spells the modules `numpy._core`). Any other opcode, callable or dtype is rejected with its
//! byte offset. Every length is checked against the bytes that remain, and what
//! the machine builds is bounded ([`Limits`]): lists hold only plain values, tuples nest at most
//! [`MAX_DEPTH`] deep (no recursion can overflow the stack, however the opcodes are arranged),
//! at most [`MAX_ITEMS`] container elements are made, and the bytes made (a memoised string
//! encoded again and again, an image listed twice) stay within twice the file's size, so a small
//! hostile file cannot expand to gigabytes.

use anyhow::{bail, Context, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

/// The content of a verification `.bin` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationBin {
    /// Encoded images (JPEG or PNG); pair `k` is images `2k` and `2k + 1`.
    pub images: Vec<Vec<u8>>,
    /// For each pair, whether both images show the same person.
    pub issame: Vec<bool>,
}

impl VerificationBin {
    /// Reads and parses a `.bin` file (at most [`facekit_io::bounded::VERIFICATION_BIN`] bytes).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = facekit_io::bounded::read(path, facekit_io::bounded::VERIFICATION_BIN)?;
        parse_verification_bin(&bytes)
            .with_context(|| format!("{} is not an insightface verification .bin", path.display()))
    }
}

/// A pickled value, restricted to what verification files contain.
#[derive(Debug, Clone)]
enum Value {
    Bytes(Rc<Vec<u8>>),
    Str(Rc<String>),
    Bool(bool),
    Int(i64),
    None,
    /// Lists hold plain values only (bytes, strings, numbers), so they never nest.
    List(Rc<RefCell<Vec<Value>>>),
    /// A tuple and its nesting depth (1 + the deepest tuple inside).
    Tuple(Rc<Vec<Value>>, usize),
    /// A whitelisted callable named by GLOBAL / STACK_GLOBAL.
    Global(Callable),
    /// A numpy dtype made by `numpy.dtype(code, ...)`.
    Dtype(String),
    /// An empty array made by `numpy.core.multiarray._reconstruct`, filled in by BUILD.
    ArrayShell,
    /// A one-dimensional numpy boolean array.
    BoolArray(Rc<Vec<bool>>),
    /// The MARK sentinel on the stack.
    Mark,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callable {
    CodecsEncode,
    Bytes,
    NumpyDtype,
    NumpyScalar,
    NumpyNdarray,
    NumpyReconstruct,
    NumpyFrombuffer,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::None => "None",
            Value::List(_) => "list",
            Value::Tuple(..) => "tuple",
            Value::Global(_) => "callable",
            Value::Dtype(_) => "numpy dtype",
            Value::ArrayShell => "numpy array without data",
            Value::BoolArray(_) => "numpy boolean array",
            Value::Mark => "mark",
        }
    }
}

/// Deepest tuple nesting accepted (a verification file needs 2).
pub(crate) const MAX_DEPTH: usize = 8;
/// Most list and tuple elements one file may make (lfw.bin makes 18,000; IJB-C about 700,000).
pub(crate) const MAX_ITEMS: u64 = 16 << 20;

/// What the pickle machine may still build.
struct Limits {
    items: u64,
    bytes: u64,
}

impl Limits {
    fn for_file(len: usize) -> Self {
        Limits { items: MAX_ITEMS, bytes: 2 * len as u64 + (1 << 20) }
    }

    fn items(&mut self, n: usize, at: usize) -> Result<()> {
        self.items = self.items.checked_sub(n as u64).with_context(|| {
            format!("at byte {at}: more than {MAX_ITEMS} list and tuple elements; not a verification file")
        })?;
        Ok(())
    }

    fn bytes(&mut self, n: usize, at: usize) -> Result<()> {
        self.bytes = self.bytes.checked_sub(n as u64).with_context(|| {
            format!("at byte {at}: the pickle builds more bytes than twice its own size (repeated memo references?)")
        })?;
        Ok(())
    }
}

/// Parses the bytes of a verification `.bin` pickle.
pub fn parse_verification_bin(data: &[u8]) -> Result<VerificationBin> {
    let mut limits = Limits::for_file(data.len());
    let top = unpickle(data, &mut limits)?;
    let Value::Tuple(items, _) = top else { bail!("the pickle holds a {}, not a (images, issame) tuple", top.kind()) };
    if items.len() != 2 {
        bail!("the pickle holds a tuple of {} items, not (images, issame)", items.len());
    }
    let (Value::List(images), Value::List(_) | Value::BoolArray(_)) = (&items[0], &items[1]) else {
        bail!("the pickle holds ({}, {}), not (list of images, list of booleans)", items[0].kind(), items[1].kind());
    };
    let images = images
        .borrow()
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Bytes(b) => {
                limits.bytes(b.len(), data.len())?;
                Ok(b.as_ref().clone())
            }
            other => bail!("image {i} is a {}, not a byte string", other.kind()),
        })
        .collect::<Result<Vec<_>>>()?;
    let issame = match &items[1] {
        Value::BoolArray(flags) => flags.as_ref().clone(),
        Value::List(list) => list
            .borrow()
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Bool(b) => Ok(*b),
                Value::Int(n @ (0 | 1)) => Ok(*n == 1),
                other => bail!("issame[{i}] is a {}, not a boolean", other.kind()),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => unreachable!("matched above"),
    };
    if images.len() != issame.len() * 2 {
        bail!(
            "{} images for {} pairs: a verification file stores exactly two images per pair",
            images.len(),
            issame.len()
        );
    }
    Ok(VerificationBin { images, issame })
}

/// A cursor over the pickle bytes that never reads past the end.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.data.len() - self.pos {
            bail!(
                "at byte {}: a length of {n} runs past the end of the file ({} bytes left)",
                self.pos,
                self.data.len() - self.pos
            );
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn len64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).with_context(|| format!("at byte {}: length {n} is too large", self.pos))
    }
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .with_context(|| format!("at byte {}: unterminated name", self.pos))?;
        let s =
            std::str::from_utf8(&rest[..end]).with_context(|| format!("at byte {}: name is not UTF-8", self.pos))?;
        self.pos += end + 1;
        Ok(s)
    }
}

fn callable(module: &str, name: &str) -> Result<Callable> {
    Ok(match (module, name) {
        ("_codecs", "encode") => Callable::CodecsEncode,
        ("__builtin__" | "builtins", "bytes") => Callable::Bytes,
        ("numpy" | "numpy.core.multiarray" | "numpy._core.multiarray", "dtype") => Callable::NumpyDtype,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Callable::NumpyScalar,
        ("numpy", "ndarray") => Callable::NumpyNdarray,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Callable::NumpyReconstruct,
        ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Callable::NumpyFrombuffer,
        _ => bail!("refusing to load {module}.{name}: a verification file only holds bytes and booleans"),
    })
}

fn apply(f: Callable, args: &[Value]) -> Result<Value> {
    match (f, args) {
        (Callable::CodecsEncode, [Value::Str(s), Value::Str(enc)])
            if enc.as_str() == "latin1" || enc.as_str() == "latin-1" =>
        {
            let bytes = s
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect::<Option<Vec<u8>>>()
                .context("_codecs.encode: a character above U+00FF cannot be latin1")?;
            Ok(Value::Bytes(Rc::new(bytes)))
        }
        (Callable::Bytes, []) => Ok(Value::Bytes(Rc::new(Vec::new()))),
        (Callable::NumpyDtype, [Value::Str(code), ..]) => Ok(Value::Dtype(code.to_string())),
        (Callable::NumpyScalar, [Value::Dtype(code), Value::Bytes(b)]) => match (code.as_str(), b.as_slice()) {
            ("b1" | "?", [x]) => Ok(Value::Bool(*x != 0)),
            _ => bail!("numpy scalar of dtype {code:?} is not a boolean"),
        },
        // numpy pickles at protocol 2 under Python 3 write the raw value as latin1 text.
        (Callable::NumpyScalar, [Value::Dtype(code), Value::Str(s)]) if code == "b1" || code == "?" => {
            match s.chars().collect::<Vec<_>>().as_slice() {
                [c] => Ok(Value::Bool(u32::from(*c) != 0)),
                _ => bail!("numpy boolean scalar with {} bytes", s.chars().count()),
            }
        }
        // ndarray.__reduce__: an empty array of the class `numpy.ndarray`, its data set by BUILD.
        (
            Callable::NumpyReconstruct,
            [Value::Global(Callable::NumpyNdarray), Value::Tuple(shape, _), Value::Bytes(_) | Value::Str(_)],
        ) if matches!(shape.as_slice(), [Value::Int(0)]) => Ok(Value::ArrayShell),
        // ndarray.__reduce_ex__(5): the data in band, then dtype, shape and order.
        (
            Callable::NumpyFrombuffer,
            [Value::Bytes(raw), Value::Dtype(code), Value::Tuple(shape, _), Value::Str(order)],
        ) if order.as_str() == "C" || order.as_str() == "F" => {
            bool_array(code, shape, raw).map(|flags| Value::BoolArray(Rc::new(flags)))
        }
        _ => bail!("unsupported call {f:?} with ({})", args.iter().map(Value::kind).collect::<Vec<_>>().join(", ")),
    }
}

/// The flags of a one-dimensional boolean array of `shape` and dtype `code` from its bytes.
fn bool_array(code: &str, shape: &[Value], raw: &[u8]) -> Result<Vec<bool>> {
    if code != "b1" && code != "?" {
        bail!("a numpy array of dtype {code:?} is not a boolean array");
    }
    let [Value::Int(n)] = shape else {
        bail!("a numpy array of {} dimensions is not a list of flags (one dimension)", shape.len());
    };
    if usize::try_from(*n).ok() != Some(raw.len()) {
        bail!("a numpy boolean array of shape ({n},) holds {} bytes", raw.len());
    }
    Ok(raw.iter().map(|&b| b != 0).collect())
}

/// The array BUILD makes of a [`Value::ArrayShell`] and numpy's state
/// `(1, shape, dtype, is_fortran, bytes)`.
fn build_array(state: &Value) -> Result<Value> {
    let Value::Tuple(items, _) = state else { bail!("numpy array state is a {}, not a tuple", state.kind()) };
    if let Some(Value::Dtype(code)) = items.get(2).filter(|_| items.len() == 5) {
        // Said first: an object array's data is a list of anything, which no check should open.
        if code != "b1" && code != "?" {
            bail!("a numpy array of dtype {code:?} is not a boolean array");
        }
    }
    match items.as_slice() {
        [Value::Int(1), Value::Tuple(shape, _), Value::Dtype(code), Value::Bool(_) | Value::Int(0 | 1), Value::Bytes(raw)] => {
            bool_array(code, shape, raw).map(|flags| Value::BoolArray(Rc::new(flags)))
        }
        _ => bail!(
            "numpy array state ({}) is not (1, shape, dtype, fortran, bytes)",
            items.iter().map(Value::kind).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Checks values about to enter a list: plain values only (a verification file's lists hold
/// images and booleans), within the element budget.
fn list_items(items: &[Value], at: usize, limits: &mut Limits) -> Result<()> {
    if let Some(v) = items
        .iter()
        .find(|v| !matches!(v, Value::Bytes(_) | Value::Str(_) | Value::Bool(_) | Value::Int(_) | Value::None))
    {
        bail!("at byte {at}: a {} inside a list (a verification file's lists hold only images and booleans)", v.kind());
    }
    limits.items(items.len(), at)
}

/// A tuple of `items`, refused when it would nest deeper than [`MAX_DEPTH`].
fn tuple(items: Vec<Value>, at: usize, limits: &mut Limits) -> Result<Value> {
    if items.iter().any(|v| matches!(v, Value::Mark)) {
        bail!("at byte {at}: a MARK inside a tuple");
    }
    let depth = 1 + items.iter().map(|v| if let Value::Tuple(_, d) = v { *d } else { 0 }).max().unwrap_or(0);
    if depth > MAX_DEPTH {
        bail!("at byte {at}: tuples nested more than {MAX_DEPTH} deep; not a verification file");
    }
    limits.items(items.len(), at)?;
    Ok(Value::Tuple(Rc::new(items), depth))
}

/// Runs the restricted pickle machine and returns the top value at STOP.
fn unpickle(data: &[u8], limits: &mut Limits) -> Result<Value> {
    let mut c = Cursor { data, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let pop_mark = |stack: &mut Vec<Value>, at: usize| -> Result<Vec<Value>> {
        let m = stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .with_context(|| format!("at byte {at}: no MARK on the stack"))?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let at = c.pos;
        let op = c.u8().context("the pickle ends without STOP")?;
        if stack.len() as u64 > MAX_ITEMS {
            bail!("at byte {at}: more than {MAX_ITEMS} values on the pickle stack; not a verification file");
        }
        let pop = |stack: &mut Vec<Value>| stack.pop().with_context(|| format!("at byte {at}: stack underflow"));
        match op {
            0x80 => {
                let proto = c.u8()?;
                if !(2..=5).contains(&proto) {
                    bail!("at byte {at}: pickle protocol {proto} (only 2 to 5 are supported)");
                }
            }
            0x95 => {
                c.u64()?; // FRAME: a length hint only.
            }
            b'.' => {
                let top = pop(&mut stack)?;
                return Ok(top);
            }
            b'(' => stack.push(Value::Mark),
            b']' => stack.push(Value::List(Rc::new(RefCell::new(Vec::new())))),
            b')' => stack.push(Value::Tuple(Rc::new(Vec::new()), 1)),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(c.u8()? as i64)),
            b'M' => stack.push(Value::Int(u16::from_le_bytes(c.take(2)?.try_into().expect("2 bytes")) as i64)),
            b'J' => stack.push(Value::Int(i32::from_le_bytes(c.take(4)?.try_into().expect("4 bytes")) as i64)),
            b'T' | b'B' | b'U' | b'C' | 0x8e | 0x96 => {
                // 0x96 is BYTEARRAY8: numpy's in-band buffer at protocol 5.
                let n = match op {
                    b'T' | b'B' => c.u32()? as usize,
                    b'U' | b'C' => c.u8()? as usize,
                    _ => c.len64()?,
                };
                let bytes = c.take(n)?;
                limits.bytes(n, at)?;
                stack.push(Value::Bytes(Rc::new(bytes.to_vec())));
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => c.u32()? as usize,
                    0x8c => c.u8()? as usize,
                    _ => c.len64()?,
                };
                let s =
                    std::str::from_utf8(c.take(n)?).with_context(|| format!("at byte {at}: string is not UTF-8"))?;
                stack.push(Value::Str(Rc::new(s.to_string())));
            }
            b'a' => {
                let item = pop(&mut stack)?;
                list_items(std::slice::from_ref(&item), at, limits)?;
                match stack.last() {
                    Some(Value::List(l)) => l.borrow_mut().push(item),
                    _ => bail!("at byte {at}: APPEND without a list"),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack, at)?;
                list_items(&items, at, limits)?;
                match stack.last() {
                    Some(Value::List(l)) => l.borrow_mut().extend(items),
                    _ => bail!("at byte {at}: APPENDS without a list"),
                }
            }
            b't' => {
                let items = pop_mark(&mut stack, at)?;
                stack.push(tuple(items, at, limits)?);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n || stack[stack.len() - n..].iter().any(|v| matches!(v, Value::Mark)) {
                    bail!("at byte {at}: TUPLE{n} needs {n} values on the stack");
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(tuple(items, at, limits)?);
            }
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => c.u8()? as u32,
                    b'r' => c.u32()?,
                    _ => memo.len() as u32,
                };
                let top = stack.last().with_context(|| format!("at byte {at}: memoizing an empty stack"))?.clone();
                limits.items(1, at)?;
                memo.insert(key, top);
            }
            b'h' | b'j' => {
                let key = if op == b'h' { c.u8()? as u32 } else { c.u32()? };
                let v =
                    memo.get(&key).with_context(|| format!("at byte {at}: memo entry {key} was never stored"))?.clone();
                stack.push(v);
            }
            b'c' => {
                let module = c.line()?;
                let name = c.line()?;
                stack.push(Value::Global(callable(module, name).with_context(|| format!("at byte {at}"))?));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                let (Value::Str(m), Value::Str(n)) = (&module, &name) else {
                    bail!("at byte {at}: STACK_GLOBAL needs two strings");
                };
                stack.push(Value::Global(callable(m, n).with_context(|| format!("at byte {at}"))?));
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                let (Value::Global(f), Value::Tuple(args, _)) = (&f, &args) else {
                    bail!("at byte {at}: REDUCE on a {} with {}", f.kind(), args.kind());
                };
                let made = apply(*f, args).with_context(|| format!("at byte {at}"))?;
                match &made {
                    Value::Bytes(b) => limits.bytes(b.len(), at)?,
                    Value::BoolArray(flags) => limits.items(flags.len(), at)?,
                    _ => {}
                }
                stack.push(made);
            }
            b'b' => {
                let state = pop(&mut stack)?;
                match stack.last_mut() {
                    // A dtype's state (byte order, flags) is irrelevant to booleans.
                    Some(Value::Dtype(_)) => {}
                    Some(top @ Value::ArrayShell) => {
                        let array = build_array(&state).with_context(|| format!("at byte {at}"))?;
                        if let Value::BoolArray(flags) = &array {
                            limits.items(flags.len(), at)?;
                        }
                        *top = array;
                    }
                    _ => bail!("at byte {at}: BUILD is only accepted on a numpy dtype or array"),
                }
            }
            other => bail!("at byte {at}: pickle opcode 0x{other:02x} is not allowed in a verification file"),
        }
    }
}
