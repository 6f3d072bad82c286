use std::fmt;
use std::str::FromStr;

/// A logical period of the monthly DAG, written `YYYY-MM` (`2026-11`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid period {input:?}: expected YYYY-MM with a month from 01 to 12")]
pub struct PeriodError {
    pub input: String,
}

impl Period {
    pub fn new(year: i32, month: u32) -> Option<Period> {
        ((1..=12).contains(&month) && (1..=9999).contains(&year)).then_some(Period { year, month })
    }
    pub fn year(self) -> i32 {
        self.year
    }
    pub fn month(self) -> u32 {
        self.month
    }
    /// The period after this one.
    pub fn succ(self) -> Period {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }
    /// The period before this one.
    pub fn pred(self) -> Period {
        if self.month == 1 {
            Period {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Period {
                year: self.year,
                month: self.month - 1,
            }
        }
    }
    /// `2026_11`: a form usable inside SQL identifiers and file names.
    pub fn compact(self) -> String {
        format!("{:04}_{:02}", self.year, self.month)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Period {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PeriodError { input: s.to_string() };
        let (y, m) = s.split_once('-').ok_or_else(err)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        Period::new(y.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?).ok_or_else(err)
    }
}

impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p: Period = "2026-11".parse().unwrap();
        assert_eq!((p.year(), p.month()), (2026, 11));
        assert_eq!(p.to_string(), "2026-11");
        assert_eq!(p.succ().to_string(), "2026-12");
        assert_eq!(p.succ().succ().to_string(), "2027-01");
        assert_eq!("2027-01".parse::<Period>().unwrap().pred(), "2026-12".parse().unwrap());
        assert_eq!(p.compact(), "2026_11");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-11",
            "2026/11",
            "",
            "2026-11-01",
            "abcd-ef",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad} accepted");
        }
    }
}
