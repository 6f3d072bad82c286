//! The field names of a stage's `Input` struct (the ids of the tasks whose outputs it reads),
//! found by asking its `Deserialize` implementation: it names its fields when it asks for a
//! struct, before reading anything.

use serde::de::{self, Visitor};

/// The fields of `T` (a struct deserialised by serde's derive); empty for anything else.
pub fn of<'de, T: serde::Deserialize<'de>>() -> Vec<&'static str> {
    let mut fields = Vec::new();
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

struct Probe<'a>(&'a mut Vec<&'static str>);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: std::fmt::Display>(_msg: M) -> Self {
        Stop
    }
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.0.extend_from_slice(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_fields_of_an_input() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct In {
            load: u32,
            clean: String,
        }
        assert_eq!(super::of::<In>(), ["load", "clean"]);
        assert!(super::of::<u32>().is_empty());
    }

    #[test]
    fn publish_reads_load_not_validate() {
        let reads = crate::pipeline::reads();
        assert_eq!(reads["publish"], ["load"]);
        assert_eq!(reads["validate"], ["load", "clean"]);
        assert_eq!(reads["load"], ["clean"]);
    }
}
