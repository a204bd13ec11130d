//! Human-readable byte sizes for `--shard-size` (`64M`, `1G`, `1.5GiB`, `500000`).

use std::fmt;
use std::str::FromStr;

/// A size in bytes, parsed from a number with an optional binary unit (K, M, G, T; `KiB`, `MB`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| format!("'{s}' is not a size (try 64M, 1G or a byte count)"))?;
        // Units are binary whatever their spelling: shard sizes are about memory and disk blocks.
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            other => return Err(format!("'{s}': unknown size unit '{other}' (use K, M, G or T)")),
        };
        let bytes = value * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 / 2.0 {
            return Err(format!("'{s}' is not a usable size"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
            if b >= 1 << shift && b.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", b >> shift);
            }
        }
        write!(f, "{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn binary_units_and_plain_bytes_parse() {
        assert_eq!("64M".parse::<ByteSize>().unwrap().0, 64 * 1024 * 1024);
        assert_eq!("1GiB".parse::<ByteSize>().unwrap().0, 1 << 30);
        assert_eq!("1.5k".parse::<ByteSize>().unwrap().0, 1536);
        assert_eq!("12345".parse::<ByteSize>().unwrap().0, 12345);
    }

    #[test]
    fn nonsense_sizes_are_refused() {
        for bad in ["", "M", "0", "12X", "-3M", "1..2G"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["64M", "1G", "3K", "1000"] {
            assert_eq!(s.parse::<ByteSize>().unwrap().to_string(), s);
        }
    }
}
