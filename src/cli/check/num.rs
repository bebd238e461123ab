//! Numbers of case files: JSON numbers, or the strings `"nan"`, `"inf"` and `"-inf"`
//! that stand for the values JSON cannot write (the case formats' agreed extension).
//!
//! A field holding such numbers is read with `#[serde(deserialize_with = "num::de")]`;
//! [`Nums`] maps the field's type (`f64` in any nesting of `Vec` and `Option`) onto the
//! same shape of [`Num`].

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;

/// One number of a case file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Num(pub f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"a number, "nan", "inf" or "-inf""#)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                match v {
                    "nan" => Ok(Num(f64::NAN)),
                    "inf" => Ok(Num(f64::INFINITY)),
                    "-inf" => Ok(Num(f64::NEG_INFINITY)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A type made of f64s that case files may write with the non-finite strings.
pub trait Nums: Sized {
    /// The same shape with [`Num`] in place of `f64`.
    type Repr: DeserializeOwned;
    /// Back to the plain type.
    fn from_repr(r: Self::Repr) -> Self;
}

impl Nums for f64 {
    type Repr = Num;
    fn from_repr(r: Num) -> f64 {
        r.0
    }
}

impl<T: Nums> Nums for Vec<T> {
    type Repr = Vec<T::Repr>;
    fn from_repr(r: Self::Repr) -> Self {
        r.into_iter().map(T::from_repr).collect()
    }
}

impl<T: Nums> Nums for Option<T> {
    type Repr = Option<T::Repr>;
    fn from_repr(r: Self::Repr) -> Self {
        r.map(T::from_repr)
    }
}

/// Reads a field of f64s written with numbers or the non-finite strings.
pub fn de<'de, D: Deserializer<'de>, T: Nums>(d: D) -> Result<T, D::Error> {
    T::Repr::deserialize(d).map(T::from_repr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct S {
        #[serde(deserialize_with = "de")]
        v: Vec<Option<Vec<f64>>>,
    }

    #[test]
    fn strings_stand_for_non_finite_values() {
        let s: S = serde_json::from_str(r#"{"v": [[1, 2.5, "nan", "inf", "-inf"], null]}"#)
            .expect("parses");
        let v = s.v[0].as_ref().expect("a list");
        assert_eq!(&v[..2], &[1.0, 2.5]);
        assert!(v[2].is_nan());
        assert_eq!(&v[3..], &[f64::INFINITY, f64::NEG_INFINITY]);
        assert!(s.v[1].is_none());
        assert!(serde_json::from_str::<S>(r#"{"v": [["NaN"]]}"#).is_err());
    }
}
