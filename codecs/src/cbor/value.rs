//! A direct reader of whole CBOR items into [`serde_cbor::Value`].
//!
//! serde_cbor builds a `Value` through serde's visitor protocol; for the
//! common items (integers, floats, definite-length strings, arrays and
//! maps, `false`, `true`, `null`) this module builds the same `Value` from
//! the bytes directly, which takes about 15% less time per small item.
//!
//! It is an accelerator, never an authority: it returns `None` for any
//! item it does not take on (a tag, an indefinite length, a half-precision
//! NaN, a simple value other than the four above, nesting deeper than
//! [`MAX_DEPTH`], invalid UTF-8 in a text string, an item cut short), and
//! the codec then goes the scanner's way, which decides. What it does
//! return is exactly what serde_cbor would: the same `Value` (map entries
//! inserted in the same order into the same `BTreeMap`, so equal keys keep
//! the first key and the last value, as there) and the same length. The
//! crate's tests compare the two on generated items and on arbitrary bytes.
//!
//! Nothing is reserved on the strength of a declared length beyond
//! [`RESERVE_AHEAD`] elements, so a short item announcing a long array
//! costs no memory it does not fill.

use std::collections::BTreeMap;

use serde_cbor::Value;

/// The deepest nesting taken here; deeper items go the scanner's way (whose
/// limit, and serde_cbor's, is higher).
pub(super) const MAX_DEPTH: usize = 64;

/// The most array elements reserved from a declared length; a longer array
/// grows as its elements arrive. At 4 (what a `Vec` of `Value`s reserves on
/// its first push anyway), an item of nested lying heads reserves at most
/// 8 KiB (`MAX_DEPTH` levels of 4 elements of 32 bytes).
const RESERVE_AHEAD: usize = 4;

/// Reads the item at the front of `bytes`: its value, with `len` set to its
/// length, or `None` (see the module documentation).
///
/// The value comes back alone (the length through `len`): a `Value` inside
/// a tuple or an `Option` of a tuple is copied piecewise on the way out.
#[inline]
pub(super) fn read_item(bytes: &[u8], len: &mut usize) -> Option<Value> {
    let mut reader = Reader { bytes, at: 0 };
    let value = reader.item(0)?;
    *len = reader.at;
    Some(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// The bytes not read yet.
    #[inline]
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// The argument of a head whose additional information is `info`;
    /// `None` for an indefinite length or a reserved value.
    #[inline]
    fn argument(&mut self, info: u8) -> Option<u64> {
        Some(match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.byte()?),
            25 => u64::from(u16::from_be_bytes(self.array()?)),
            26 => u64::from(u32::from_be_bytes(self.array()?)),
            27 => u64::from_be_bytes(self.array()?),
            _ => return None,
        })
    }

    /// A length argument: bytes, elements or pairs.
    #[inline]
    fn length(&mut self, info: u8) -> Option<usize> {
        usize::try_from(self.argument(info)?).ok()
    }

    /// An array of `n` items at nesting `depth`. Each item takes a byte at
    /// least: an array announcing more than the window holds is left to the
    /// scanner (which may refuse it at its head) before anything is read.
    #[inline(never)]
    fn list(&mut self, n: usize, depth: usize) -> Option<Value> {
        if depth >= MAX_DEPTH || n > self.left() {
            return None;
        }
        let mut items = Vec::with_capacity(n.min(RESERVE_AHEAD));
        for _ in 0..n {
            items.push(self.item(depth + 1)?);
        }
        Some(Value::Array(items))
    }

    /// A map of `n` pairs at nesting `depth`, as [`list`](Self::list).
    #[inline(never)]
    fn map(&mut self, n: usize, depth: usize) -> Option<Value> {
        if depth >= MAX_DEPTH || n.saturating_mul(2) > self.left() {
            return None;
        }
        let mut map = BTreeMap::new();
        for _ in 0..n {
            let key = self.item(depth + 1)?;
            let value = self.item(depth + 1)?;
            map.insert(key, value);
        }
        Some(Value::Map(map))
    }

    fn item(&mut self, depth: usize) -> Option<Value> {
        let head = self.byte()?;
        let info = head & 0x1f;
        Some(match head >> 5 {
            0 => Value::Integer(i128::from(self.argument(info)?)),
            1 => Value::Integer(-1 - i128::from(self.argument(info)?)),
            2 => {
                let n = self.length(info)?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            3 => {
                let n = self.length(info)?;
                Value::Text(std::str::from_utf8(self.take(n)?).ok()?.to_owned())
            }
            4 => {
                let n = self.length(info)?;
                self.list(n, depth)?
            }
            5 => {
                let n = self.length(info)?;
                self.map(n, depth)?
            }
            7 => match info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                // null and undefined: serde_cbor's Value has no undefined.
                22 | 23 => Value::Null,
                25 => Value::Float(half(u16::from_be_bytes(self.array()?))?),
                26 => Value::Float(f64::from(f32::from_be_bytes(self.array()?))),
                27 => Value::Float(f64::from_be_bytes(self.array()?)),
                _ => return None,
            },
            // Tags (6) go the scanner's way.
            _ => return None,
        })
    }
}

/// A half-precision float, exactly; `None` for a NaN, whose payload bits
/// serde_cbor's conversion decides.
fn half(bits: u16) -> Option<f64> {
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f64::from(bits & 0x3ff);
    let magnitude = match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => return None,
        _ => (mantissa + 1024.0) * 2f64.powi(exponent - 25),
    };
    Some(if bits & 0x8000 == 0 {
        magnitude
    } else {
        -magnitude
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What serde_cbor makes of the item at the front of `bytes`.
    fn serde_cbor_reads(bytes: &[u8]) -> Option<(Value, usize)> {
        use serde::Deserialize;
        let mut de = serde_cbor::Deserializer::from_slice(bytes);
        let value = Value::deserialize(&mut de).ok()?;
        Some((value, de.byte_offset()))
    }

    fn ours(bytes: &[u8]) -> Option<(Value, usize)> {
        let mut len = 0;
        read_item(bytes, &mut len).map(|v| (v, len))
    }

    /// Equality down to the bits: `Value`'s `==` compares floats by value
    /// and integer map keys by magnitude, which would let a wrong sign of
    /// zero or a wrong key through. The debug form shows both.
    fn same(a: &(Value, usize), b: &(Value, usize)) -> bool {
        a.1 == b.1 && format!("{:?}", a.0) == format!("{:?}", b.0)
    }

    /// Values as serde_cbor writes them; with `tagged`, tags and NaNs too.
    fn arb_value(tagged: bool) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Integer(n.into())),
            any::<u64>().prop_map(|n| Value::Integer(n.into())),
            (any::<u64>()).prop_map(|n| Value::Integer(-1 - i128::from(n))),
            // Heads with 1-, 2- and 4-byte arguments.
            (-70_000i64..70_000).prop_map(|n| Value::Integer(n.into())),
            (0u64..=u64::from(u32::MAX)).prop_map(|n| Value::Integer(n.into())),
            any::<f64>()
                .prop_filter("NaN", move |f| tagged || !f.is_nan())
                .prop_map(Value::Float),
            any::<f32>()
                .prop_filter("NaN", move |f| tagged || !f.is_nan())
                .prop_map(|f| Value::Float(f.into())),
            prop::sample::select(vec![0.0, -0.0, 0.5, -65504.0, 6.0e-8, f64::INFINITY])
                .prop_map(Value::Float),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
            prop::collection::vec(any::<u8>(), 250..300).prop_map(Value::Bytes),
            "\\PC{0,30}".prop_map(Value::Text),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..40).prop_map(Value::Array),
                prop::collection::btree_map(inner.clone(), inner.clone(), 0..6)
                    .prop_map(Value::Map),
                (0u64..300, inner).prop_map(move |(t, v)| if tagged {
                    Value::Tag(t, Box::new(v))
                } else {
                    v
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever this reader returns, serde_cbor returns too, on
        /// written items and on items with a byte changed or cut off.
        #[test]
        fn reads_what_serde_cbor_reads(
            value in arb_value(true),
            flip in any::<Option<(prop::sample::Index, u8)>>(),
            cut in any::<Option<prop::sample::Index>>(),
            trailing in prop::collection::vec(any::<u8>(), 0..3),
        ) {
            let mut bytes = serde_cbor::to_vec(&value).unwrap();
            if let Some((at, xor)) = flip {
                let at = at.index(bytes.len());
                bytes[at] ^= xor;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend_from_slice(&trailing);
            if let Some(got) = ours(&bytes) {
                let want = serde_cbor_reads(&bytes);
                prop_assert!(
                    want.as_ref().is_some_and(|w| same(&got, w)),
                    "{bytes:02x?}: ours {got:?}, serde_cbor {want:?}"
                );
            }
        }

        /// Written items without tags and NaNs are all read here, not
        /// left to the scanner.
        #[test]
        fn takes_every_plain_item_serde_cbor_writes(value in arb_value(false)) {
            let bytes = serde_cbor::to_vec(&value).unwrap();
            let got = ours(&bytes);
            prop_assert!(got.is_some(), "{bytes:02x?}");
            prop_assert!(same(&got.unwrap(), &serde_cbor_reads(&bytes).unwrap()));
        }
    }

    #[test]
    fn every_half_precision_float_reads_as_serde_cbor_reads_it() {
        for bits in 0..=u16::MAX {
            let [hi, lo] = bits.to_be_bytes();
            let item = [0xf9, hi, lo];
            match ours(&item) {
                Some(got) => {
                    let want = serde_cbor_reads(&item).expect("serde_cbor reads every half");
                    let (Value::Float(g), Value::Float(w)) = (&got.0, &want.0) else {
                        panic!("not a float: {got:?}");
                    };
                    assert_eq!(g.to_bits(), w.to_bits(), "half {bits:#06x}");
                }
                None => assert!(
                    bits & 0x7c00 == 0x7c00 && bits & 0x3ff != 0,
                    "half {bits:#06x} refused but not a NaN"
                ),
            }
        }
    }

    #[test]
    fn equal_map_keys_keep_the_first_key_and_the_last_value() {
        // Two NaN keys with different payloads: serde_cbor's `Value` orders
        // floats by their encoding, which is one NaN for both, so they are
        // one key: the first key stays, with the last value.
        let nan = |payload: u8| [0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, payload];
        let mut item = vec![0xa2];
        item.extend(nan(1));
        item.extend([0x61, b'a']);
        item.extend(nan(2));
        item.extend([0x61, b'b']);
        let key_bits = |v: &Value| match v {
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| match k {
                    Value::Float(f) => (f.to_bits(), v.clone()),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let got = ours(&item).unwrap();
        let want = serde_cbor_reads(&item).unwrap();
        assert_eq!(got.1, want.1);
        assert_eq!(key_bits(&got.0), key_bits(&want.0));
        assert_eq!(
            key_bits(&got.0),
            [(0x7ff8_0000_0000_0001, Value::Text("b".into()))]
        );
    }

    #[test]
    fn a_long_declared_array_reserves_no_more_than_its_bytes_allow() {
        // An array announcing 2^32 elements over 4 bytes: nothing to read,
        // and nothing reserved for the announcement.
        let item = [0x9a, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03];
        assert!(ours(&item).is_none());
    }

    #[test]
    fn nesting_past_max_depth_is_left_to_the_scanner() {
        let nested = |levels: usize| {
            let mut item = vec![0x81; levels];
            item.push(0x00);
            item
        };
        assert!(ours(&nested(MAX_DEPTH)).is_some());
        // serde_cbor takes 100 levels, refuses 200: neither is read here.
        for levels in [MAX_DEPTH + 1, 100, 200] {
            assert!(ours(&nested(levels)).is_none(), "{levels}");
        }
        let mut maps = [0xa1, 0x00].repeat(MAX_DEPTH + 1);
        maps.push(0x00);
        assert!(ours(&maps).is_none());
    }

    #[test]
    fn what_is_left_to_the_scanner() {
        for item in [
            &[0xc1, 0x00][..],         // a tag
            &[0x9f, 0x00, 0xff],       // an indefinite-length array
            &[0x5f, 0x41, 0x00, 0xff], // an indefinite-length byte string
            &[0x62, 0xc3, 0x28],       // invalid UTF-8
            &[0xf0],                   // simple value 16
            &[0xf8, 0x20],             // simple value 32
            &[0xf9, 0x7e, 0x00],       // a half NaN
            &[0x1c],                   // reserved additional information
            &[0xff],                   // a break with nothing open
            &[0x82, 0x01],             // cut short
        ] {
            assert!(ours(item).is_none(), "{item:02x?}");
        }
    }
}
