//! Gender and age labels: `--attributes FILE.csv` and `--utkface-labels`.
//!
//! The CSV has a header row with a `key` column and a `gender` and/or `age` column (other columns
//! are ignored). `key` is an image path relative to its input root (`Abdullah_Gul/Abdullah_Gul_0001.jpg`)
//! or an identity folder relative to the root (`Abdullah_Gul`, `msra/m.0abc` in a multi-source root);
//! the known cells of a per-image line win over its identity's line. `gender` is `m`, `male`, `0`, `f`, `female` or `1`
//! (UTKFace's coding: 0 = male, 1 = female); `age` is whole years from 0 to 150. An empty cell means
//! unknown.
//!
//! `--utkface-labels` reads the same labels from UTKFace file names, `AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`;
//! names that do not follow that pattern keep unknown labels. CSV lines override file names.

use anyhow::{bail, Context, Result};
use facekit_shard::Gender;
use std::collections::HashMap;
use std::path::Path;

/// Largest age accepted (years).
pub(crate) const MAX_AGE: u16 = 150;

/// Gender and age of a face, each possibly unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Gender, if known.
    pub gender: Option<Gender>,
    /// Age in years, if known.
    pub age: Option<u16>,
}

impl Attributes {
    /// `self` with the known fields of `other` laid over it.
    pub(crate) fn overlay(self, other: Attributes) -> Attributes {
        Attributes { gender: other.gender.or(self.gender), age: other.age.or(self.age) }
    }
}

/// Attributes by key (image path or identity folder).
#[derive(Debug, Default)]
pub struct AttributeTable {
    by_key: HashMap<String, Attributes>,
}

impl AttributeTable {
    /// Reads and checks an attributes CSV; errors name the file and line.
    pub fn read(path: &Path) -> Result<Self> {
        let (file, _) = facekit_io::bounded::open_within(path, facekit_io::bounded::TABLE)
            .context("cannot read the attributes file")?;
        Self::from_reader(file).with_context(|| format!("attributes file {}", path.display()))
    }

    /// Parses CSV text from any reader.
    pub fn from_reader(r: impl std::io::Read) -> Result<Self> {
        let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(false).from_reader(r);
        let headers = rdr.headers().context("cannot read the header row")?.clone();
        let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let key_col = col("key").context("no `key` column in the header row")?;
        let (gender_col, age_col) = (col("gender"), col("age"));
        if gender_col.is_none() && age_col.is_none() {
            bail!("the header row has neither a `gender` nor an `age` column");
        }
        let mut by_key = HashMap::new();
        for row in rdr.records() {
            let row = row.context("malformed CSV")?;
            let line = row.position().map_or(0, |p| p.line());
            let field = |c: Option<usize>| c.and_then(|c| row.get(c)).unwrap_or("");
            let key = field(Some(key_col));
            if key.is_empty() {
                bail!("line {line}: empty key");
            }
            let gender = parse_gender(field(gender_col)).with_context(|| format!("line {line}"))?;
            let age = parse_age(field(age_col)).with_context(|| format!("line {line}"))?;
            if by_key.insert(key.to_string(), Attributes { gender, age }).is_some() {
                bail!("line {line}: key '{key}' appears twice");
            }
        }
        Ok(AttributeTable { by_key })
    }

    /// The attributes of one image: its identity's line, with the known cells of its own line on top.
    pub fn get(&self, rel: &str, identity_key: Option<&str>) -> Option<Attributes> {
        let ident = identity_key.and_then(|k| self.by_key.get(k)).copied();
        match (ident, self.by_key.get(rel).copied()) {
            (Some(i), Some(own)) => Some(i.overlay(own)),
            (i, own) => own.or(i),
        }
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when the file had no lines.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

fn parse_gender(s: &str) -> Result<Option<Gender>> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "" => None,
        "m" | "male" | "0" => Some(Gender::Male),
        "f" | "female" | "1" => Some(Gender::Female),
        other => bail!("gender '{other}' is not one of m, male, 0, f, female, 1 or empty"),
    })
}

fn parse_age(s: &str) -> Result<Option<u16>> {
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<u16>() {
        Ok(a) if a <= MAX_AGE => Ok(Some(a)),
        _ => bail!("age '{s}' is not a whole number of years from 0 to {MAX_AGE}"),
    }
}

/// Gender and age from a UTKFace file name (`26_1_2_20170116174525125.jpg.chip.jpg`), if it
/// follows the pattern.
pub(crate) fn utkface_attributes(file_name: &str) -> Option<Attributes> {
    let mut parts = file_name.split('_');
    let age: u16 = parts.next()?.parse().ok().filter(|&a| a <= MAX_AGE)?;
    let gender = match parts.next()? {
        "0" => Gender::Male,
        "1" => Gender::Female,
        _ => return None,
    };
    // The race field must be present too, or this is some other naming scheme.
    parts.next()?.parse::<u8>().ok()?;
    Some(Attributes { gender: Some(gender), age: Some(age) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_per_image_win_over_per_identity() {
        let t = AttributeTable::from_reader(&b"key,gender,age\nbob,m,40\nbob/2.jpg,F,\namy/1.jpg,,7\n"[..]).unwrap();
        assert_eq!(t.get("bob/1.jpg", Some("bob")), Some(Attributes { gender: Some(Gender::Male), age: Some(40) }));
        assert_eq!(t.get("bob/2.jpg", Some("bob")), Some(Attributes { gender: Some(Gender::Female), age: Some(40) }));
        assert_eq!(t.get("amy/1.jpg", Some("amy")), Some(Attributes { gender: None, age: Some(7) }));
        assert_eq!(t.get("zed/1.jpg", Some("zed")), None);
    }

    #[test]
    fn bad_cells_name_their_line() {
        let err = AttributeTable::from_reader(&b"key,gender,age\na,m,4\nb,x,3\n"[..]).unwrap_err();
        assert!(format!("{err:#}").contains("line 3"), "{err:#}");
        let err = AttributeTable::from_reader(&b"key,age\na,400\n"[..]).unwrap_err();
        assert!(format!("{err:#}").contains("400"), "{err:#}");
        assert!(AttributeTable::from_reader(&b"path,gender\na,m\n"[..]).is_err());
    }

    #[test]
    fn utkface_names_give_gender_and_age() {
        let a = utkface_attributes("26_1_2_20170116174525125.jpg.chip.jpg").unwrap();
        assert_eq!(a, Attributes { gender: Some(Gender::Female), age: Some(26) });
        assert_eq!(utkface_attributes("1_0_0_2016.jpg.chip.jpg").unwrap().gender, Some(Gender::Male));
        assert_eq!(utkface_attributes("Abdullah_Gul_0001.jpg"), None);
        assert_eq!(utkface_attributes("26_3_2_x.jpg"), None);
    }
}
