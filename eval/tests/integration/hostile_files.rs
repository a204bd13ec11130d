//! Hostile pairs lists and verification `.bin` pickles: errors, never panics, stack overflows or
//! gigabytes (issue "Trust").

use std::time::{Duration, Instant};

#[test]
fn pairs_headers_promising_more_than_the_file_are_errors() {
    use facekit_eval::pairs::PairList;
    let err = format!("{:#}", PairList::parse("1000000000000 1000000000000\nA 1 2\n").unwrap_err());
    assert!(err.contains("promises more pairs"), "{err}");
    let err = format!("{:#}", PairList::parse("18446744073709551615 3\nA 1 2\n").unwrap_err());
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn pairs_names_cannot_leave_the_image_root() {
    use facekit_eval::pairs::PairList;
    for line in ["../etc 1 2", "a/../../x 1 2", "Bob 1 .. 2", "/abs 1 2"] {
        let err = format!("{:#}", PairList::parse(&format!("1 1\n{line}\nA 1 B 2\n")).unwrap_err());
        assert!(err.contains("not a person's folder name"), "{line}: {err}");
    }
}

/// A pickle: protocol 2 header, `body`, STOP.
fn pickle(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, 2];
    v.extend_from_slice(body);
    v.push(b'.');
    v
}

#[test]
fn deeply_nested_bin_pickles_are_refused_without_overflowing_the_stack() {
    use facekit_eval::pickle::parse_verification_bin;
    // A million nested tuples, 2 bytes each: the recursion of dropping them once aborted.
    let mut body = vec![b')'];
    body.extend(std::iter::repeat_n([0x85u8], 1_000_000).flatten());
    let err = format!("{:#}", parse_verification_bin(&pickle(&body)).unwrap_err());
    assert!(err.contains("nested"), "{err}");
    // Lists inside lists (the other way to nest).
    let mut body = Vec::new();
    for _ in 0..100_000 {
        body.extend_from_slice(b"]");
    }
    body.extend(std::iter::repeat_n(b'a', 99_999));
    let err = format!("{:#}", parse_verification_bin(&pickle(&body)).unwrap_err());
    assert!(err.contains("inside a list"), "{err}");
}

#[test]
fn a_small_bin_reusing_its_memo_cannot_expand_to_gigabytes() {
    use facekit_eval::pickle::parse_verification_bin;
    // One 1 MiB image memoised, then referenced 10,000 times (3 bytes each): 10 GiB if copied.
    let mut body = vec![b']', b'('];
    body.push(b'B');
    body.extend_from_slice(&(1u32 << 20).to_le_bytes());
    body.extend(std::iter::repeat_n(0u8, 1 << 20));
    body.extend_from_slice(b"q\x00");
    for _ in 0..10_000 {
        body.extend_from_slice(b"h\x00");
    }
    body.extend_from_slice(b"e]");
    body.extend_from_slice(b"(");
    body.extend_from_slice(&[0x88; 5000]);
    body.extend_from_slice(b"e\x86");
    let t0 = Instant::now();
    let err = format!("{:#}", parse_verification_bin(&pickle(&body)).unwrap_err());
    assert!(err.contains("more bytes than twice its own size"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(20));
}
