//! A serializer adapter that refuses the floats (and tags, and integers)
//! a format cannot write exactly.
//!
//! serde_json writes NaN and the infinities as `null`, and serde_cbor writes
//! every NaN as the one canonical NaN, dropping its sign and payload: both
//! silently turn a value into another, as serde_json does with a CBOR tag,
//! which it writes as the bare value it tags. [`Floats`] wraps any
//! serializer, passes every call through unchanged and fails on a float
//! (or tag) its [`FloatRule`] refuses, wherever it sits in the value: nested
//! values are wrapped again on the way down, so the check costs one
//! comparison per float or newtype and nothing else.

use std::marker::PhantomData;

use serde::ser::{self, Serialize, Serializer};

/// The newtype-struct name under which serde_cbor's values carry a tag.
const CBOR_TAG: &str = "\0cbor_tag";

/// Whether serde_cbor's tag newtype being written carries a tag: serde_cbor
/// also writes an untagged `Tagged` (what an untagged item reads into)
/// through it, and says which while it does. Without the `cbor` feature
/// that cannot be asked, and every such newtype counts as tagged.
fn tagged() -> bool {
    #[cfg(feature = "cbor")]
    {
        serde_cbor::tags::current_cbor_tag().is_some()
    }
    #[cfg(not(feature = "cbor"))]
    {
        true
    }
}

/// Which floats (and whether tags) a format's writer keeps exactly.
pub(crate) trait FloatRule {
    /// Why a refused float is refused.
    const REFUSED: &'static str;
    /// Whether the format writes CBOR tags (serde_cbor's tagged values,
    /// which other serializers write as their bare content).
    const KEEPS_TAGS: bool;
    fn keeps_f32(x: f32) -> bool;
    fn keeps_f64(x: f64) -> bool;
    /// Why a refused 128-bit integer is refused.
    const REFUSED_INT: &'static str = "";
    /// Whether the format writes this 128-bit integer exactly (and reads
    /// it back as the integer it was).
    #[inline]
    fn keeps_i128(_: i128) -> bool {
        true
    }
    /// As [`keeps_i128`](Self::keeps_i128), unsigned.
    #[inline]
    fn keeps_u128(_: u128) -> bool {
        true
    }
}

/// JSON: finite numbers only.
#[cfg(feature = "json")]
pub(crate) struct Finite;

#[cfg(feature = "json")]
impl FloatRule for Finite {
    const REFUSED: &'static str = "NaN and infinities have no JSON form";
    const KEEPS_TAGS: bool = false;
    const REFUSED_INT: &'static str =
        "an integer beyond 64 bits has no exact JSON form (it reads back as a float)";

    #[inline]
    fn keeps_i128(x: i128) -> bool {
        (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(&x)
    }

    #[inline]
    fn keeps_u128(x: u128) -> bool {
        x <= u128::from(u64::MAX)
    }
    #[inline]
    fn keeps_f32(x: f32) -> bool {
        x.is_finite()
    }
    #[inline]
    fn keeps_f64(x: f64) -> bool {
        x.is_finite()
    }
}

/// CBOR through serde_cbor: any float but a NaN other than the canonical
/// quiet one, which is the only NaN serde_cbor writes.
#[cfg(feature = "cbor")]
pub(crate) struct PlainNan;

#[cfg(feature = "cbor")]
impl FloatRule for PlainNan {
    const REFUSED: &'static str = "a NaN with a sign or payload would be written as the plain NaN";
    const KEEPS_TAGS: bool = true;
    #[inline]
    fn keeps_f32(x: f32) -> bool {
        !x.is_nan() || x.to_bits() == f32::NAN.to_bits()
    }
    #[inline]
    fn keeps_f64(x: f64) -> bool {
        !x.is_nan() || x.to_bits() == f64::NAN.to_bits()
    }
}

/// A serializer (or one of its compound serializers) that refuses the
/// floats `R` refuses.
pub(crate) struct Floats<S, R>(S, PhantomData<R>);

impl<S, R> Floats<S, R> {
    pub(crate) fn new(serializer: S) -> Floats<S, R> {
        Floats(serializer, PhantomData)
    }
}

/// A value serialized through [`Floats`].
struct Checked<'a, T: ?Sized, R>(&'a T, PhantomData<R>);

impl<'a, T: ?Sized, R> Checked<'a, T, R> {
    #[inline]
    fn new(value: &'a T) -> Self {
        Checked(value, PhantomData)
    }
}

impl<T: Serialize + ?Sized, R: FloatRule> Serialize for Checked<'_, T, R> {
    #[inline]
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Floats::<S, R>::new(serializer))
    }
}

/// Forwards plain `serialize_*` methods to the wrapped serializer.
macro_rules! forward {
    ($($name:ident($ty:ty);)*) => {$(
        #[inline]
        fn $name(self, v: $ty) -> Result<S::Ok, S::Error> {
            self.0.$name(v)
        }
    )*};
}

impl<S: Serializer, R: FloatRule> Serializer for Floats<S, R> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Floats<S::SerializeSeq, R>;
    type SerializeTuple = Floats<S::SerializeTuple, R>;
    type SerializeTupleStruct = Floats<S::SerializeTupleStruct, R>;
    type SerializeTupleVariant = Floats<S::SerializeTupleVariant, R>;
    type SerializeMap = Floats<S::SerializeMap, R>;
    type SerializeStruct = Floats<S::SerializeStruct, R>;
    type SerializeStructVariant = Floats<S::SerializeStructVariant, R>;

    forward! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_unit_struct(&'static str);
    }

    #[inline]
    fn serialize_i128(self, v: i128) -> Result<S::Ok, S::Error> {
        if !R::keeps_i128(v) {
            return Err(ser::Error::custom(R::REFUSED_INT));
        }
        self.0.serialize_i128(v)
    }

    #[inline]
    fn serialize_u128(self, v: u128) -> Result<S::Ok, S::Error> {
        if !R::keeps_u128(v) {
            return Err(ser::Error::custom(R::REFUSED_INT));
        }
        self.0.serialize_u128(v)
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        if !R::keeps_f32(v) {
            return Err(ser::Error::custom(R::REFUSED));
        }
        self.0.serialize_f32(v)
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        if !R::keeps_f64(v) {
            return Err(ser::Error::custom(R::REFUSED));
        }
        self.0.serialize_f64(v)
    }

    #[inline]
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Checked::<_, R>::new(value))
    }

    #[inline]
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        if !R::KEEPS_TAGS && name == CBOR_TAG && tagged() {
            return Err(ser::Error::custom("a CBOR tag has no form in this format"));
        }
        self.0
            .serialize_newtype_struct(name, &Checked::<_, R>::new(value))
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Checked::<_, R>::new(value))
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Floats::new)
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Floats::new)
    }

    #[inline]
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Floats::new)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Floats::new)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Floats::new)
    }

    #[inline]
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Floats::new)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Floats::new)
    }

    #[inline]
    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.collect_str(value)
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// The compound serializers: elements are wrapped, the rest forwarded.
macro_rules! compound {
    ($($trait:ident :: $method:ident;)*) => {$(
        impl<S: ser::$trait, R: FloatRule> ser::$trait for Floats<S, R> {
            type Ok = S::Ok;
            type Error = S::Error;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
                self.0.$method(&Checked::<_, R>::new(value))
            }

            #[inline]
            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    )*};
}

compound! {
    SerializeSeq::serialize_element;
    SerializeTuple::serialize_element;
    SerializeTupleStruct::serialize_field;
    SerializeTupleVariant::serialize_field;
}

impl<S: ser::SerializeMap, R: FloatRule> ser::SerializeMap for Floats<S, R> {
    type Ok = S::Ok;
    type Error = S::Error;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), S::Error> {
        self.0.serialize_key(&Checked::<_, R>::new(key))
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.0.serialize_value(&Checked::<_, R>::new(value))
    }

    #[inline]
    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), S::Error> {
        self.0
            .serialize_entry(&Checked::<_, R>::new(key), &Checked::<_, R>::new(value))
    }

    #[inline]
    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

/// The two struct serializers, which take a field name with each value.
macro_rules! fields {
    ($($trait:ident;)*) => {$(
        impl<S: ser::$trait, R: FloatRule> ser::$trait for Floats<S, R> {
            type Ok = S::Ok;
            type Error = S::Error;

            #[inline]
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), S::Error> {
                self.0.serialize_field(key, &Checked::<_, R>::new(value))
            }

            #[inline]
            fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
                self.0.skip_field(key)
            }

            #[inline]
            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    )*};
}

fields! {
    SerializeStruct;
    SerializeStructVariant;
}
