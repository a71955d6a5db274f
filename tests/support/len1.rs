//! A decoder for the end-of-input tests: it takes a frame's header first
//! and reports a truncation itself.
#![allow(dead_code)]

use std::io;

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// One length byte (consumed first, kept as state), then that many bytes.
/// At end of input inside a frame its own decode_eof says UnexpectedEof.
#[derive(Default, Clone, Debug)]
pub struct Len1 {
    want: Option<usize>,
}
impl Decoder for Len1 {
    type Item = BytesMut;
    type Error = io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        if self.want.is_none() {
            if src.is_empty() {
                return Ok(None);
            }
            self.want = Some(src.get_u8() as usize);
        }
        let n = self.want.unwrap();
        if src.len() < n {
            return Ok(None);
        }
        self.want = None;
        Ok(Some(src.split_to(n)))
    }
    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        match self.decode(src)? {
            Some(f) => Ok(Some(f)),
            None if src.is_empty() && self.want.is_none() => Ok(None),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated frame",
            )),
        }
    }
}
