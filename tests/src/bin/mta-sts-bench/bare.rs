//! The floor: netstring servers that answer every request with the fixed [`REPLY`] and do
//! nothing else. The bench runs them as its own children (`--bare-threads PORT`,
//! `--bare-async PORT`) so their CPU and memory are read like any daemon's.

use crate::workload::reply_frame;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[cfg(doc)]
use crate::workload::REPLY;

/// Largest request buffered (Postfix's own limit on a socketmap request is 100,000 bytes).
const BUFFER: usize = 16 * 1024;

/// Where the first netstring in `buf` ends: `Ok(Some(end))` past its `,`, `Ok(None)` when
/// incomplete, `Err(())` when malformed.
pub fn frame_end(buf: &[u8]) -> Result<Option<usize>, ()> {
    let mut len = 0usize;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'0'..=b'9' if i < 9 => len = len * 10 + usize::from(b - b'0'),
            b':' if i > 0 => {
                let end = i + 1 + len;
                return match buf.get(end) {
                    Some(b',') => Ok(Some(end + 1)),
                    Some(_) => Err(()),
                    None => Ok(None),
                };
            }
            _ => return Err(()),
        }
    }
    Ok(None)
}

/// Takes the complete requests at the front of `buf[..*len]`, appending one reply per request
/// to `out`; `false` on a malformed request.
fn answer(buf: &mut [u8], len: &mut usize, reply: &[u8], out: &mut Vec<u8>) -> bool {
    let mut start = 0;
    loop {
        match buf.get(start..*len).map(frame_end) {
            Some(Ok(Some(end))) => {
                out.extend_from_slice(reply);
                start += end;
            }
            Some(Ok(None)) => break,
            _ => return false,
        }
    }
    buf.copy_within(start..*len, 0);
    *len -= start;
    *len < buf.len()
}

/// Dies with the bench (a killed bench must not leave its children behind).
pub fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// A thread per connection, blocking reads and writes.
pub fn run_threads(port: u16) -> std::io::Result<()> {
    die_with_parent();
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let reply: Arc<[u8]> = reply_frame().into();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let reply = Arc::clone(&reply);
        std::thread::spawn(move || serve_blocking(stream, &reply));
    }
    Ok(())
}

fn serve_blocking(mut stream: TcpStream, reply: &[u8]) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; BUFFER];
    let mut len = 0;
    let mut out = Vec::new();
    loop {
        match stream.read(buf.get_mut(len..).unwrap_or_default()) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        if !answer(&mut buf, &mut len, reply, &mut out) {
            return;
        }
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// tokio, two worker threads, a task per connection.
pub fn run_async(port: u16) -> std::io::Result<()> {
    die_with_parent();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()?;
    let reply: Arc<[u8]> = reply_frame().into();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(serve_async(stream, Arc::clone(&reply)));
        }
    })
}

async fn serve_async(mut stream: tokio::net::TcpStream, reply: Arc<[u8]>) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; BUFFER];
    let mut len = 0;
    let mut out = Vec::new();
    loop {
        match stream.read(buf.get_mut(len..).unwrap_or_default()).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        if !answer(&mut buf, &mut len, &reply, &mut out) {
            return;
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::frame_end;

    #[test]
    fn frames() {
        assert_eq!(frame_end(b"3:abc,"), Ok(Some(6)));
        assert_eq!(frame_end(b"3:abc,4:"), Ok(Some(6)));
        assert_eq!(frame_end(b"3:ab"), Ok(None));
        assert_eq!(frame_end(b"12"), Ok(None));
        assert_eq!(frame_end(b""), Ok(None));
        assert_eq!(frame_end(b":abc,"), Err(()));
        assert_eq!(frame_end(b"3:abcd"), Err(()));
        assert_eq!(frame_end(b"x"), Err(()));
        assert_eq!(frame_end(b"0:,"), Ok(Some(3)));
    }
}
