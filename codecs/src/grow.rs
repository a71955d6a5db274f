//! A writer that appends to a `BytesMut` without doubling it.

use std::io;

use bytes::{Bytes, BytesMut};

/// Below this many bytes held, the buffer grows as `BytesMut` does (at
/// most twice this, a small price for the usual small item).
const GROW_GENTLY_FROM: usize = 64 * 1024;

/// Appends to a `BytesMut` for a serializer that writes in small pieces.
///
/// `BytesMut` grows as `Vec` does, to at least twice its capacity, so a
/// large value written piece by piece would leave a buffer up to twice its
/// size. Past [`GROW_GENTLY_FROM`] bytes this grows the buffer by an eighth
/// of what it holds (or by what a write needs, if more): a large item
/// takes about 1.125 times its size.
pub(crate) struct GrowWriter<'a>(pub(crate) &'a mut BytesMut);

impl io::Write for GrowWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let dst = &mut *self.0;
        if dst.capacity() - dst.len() < data.len() && dst.len() >= GROW_GENTLY_FROM {
            let extra = data.len().max(dst.len() / 8);
            let mut v = Vec::from(std::mem::take(dst));
            v.reserve_exact(extra);
            *dst = BytesMut::from(Bytes::from(v));
        }
        dst.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_large_item_written_in_pieces_takes_about_its_size() {
        let mut dst = BytesMut::from(&b"before "[..]);
        let piece = [b'p'; 100];
        let mut moves = 0;
        for _ in 0..50_000 {
            let at = dst.as_ptr();
            GrowWriter(&mut dst).write_all(&piece).unwrap();
            moves += usize::from(dst.as_ptr() != at);
        }
        // Grown by an eighth at a time: a few dozen moves, not one per
        // write (which would copy the item over and over).
        assert!(moves < 100, "moved {moves} times");
        assert_eq!(dst.len(), 7 + 5_000_000);
        assert!(&dst[..7] == b"before " && dst[7..].iter().all(|&b| b == b'p'));
        assert!(
            dst.capacity() <= dst.len() + dst.len() / 8 + 100,
            "{}",
            dst.capacity()
        );
    }
}
