//! Test doubles for the transport, shared by the unit tests.

/// An IO that serves `input` to reads (`Pending` when it is empty) and
/// keeps each write call's bytes apart, a vectored write as one; while
/// `blocked`, writes are `Pending`.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) input: Vec<u8>,
    pub(crate) writes: Vec<Vec<u8>>,
    pub(crate) blocked: bool,
}

impl tokio::io::AsyncRead for Recorder {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.input.is_empty() {
            return std::task::Poll::Pending;
        }
        let n = self.input.len().min(buf.remaining());
        buf.put_slice(&self.input[..n]);
        self.input.drain(..n);
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Recorder {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.blocked {
            return std::task::Poll::Pending;
        }
        self.writes.push(buf.to_vec());
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.blocked {
            return std::task::Poll::Pending;
        }
        let write: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let n = write.len();
        self.writes.push(write);
        std::task::Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
