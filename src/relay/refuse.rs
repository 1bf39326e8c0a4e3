//! The SMTP VIP's answer to a client outside its allow-list: `554` at once, then, as Postfix
//! does for a client it rejects at connect, `221` to `QUIT` and `503 5.5.1` to anything else,
//! until the client quits or a short time passes. A client that sends `QUIT` after the `554`
//! (every SMTP library does) then sees a clean end instead of "connection closed unexpectedly".
//!
//! Bounded: a few seconds, a few commands, short lines, and a fixed number of such dialogues at
//! once per relay (past it, the `554` is followed by a close, as before).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a refused client may keep talking.
pub const LINGER: Duration = Duration::from_secs(10);
/// Commands answered at most.
const MAX_COMMANDS: usize = 16;
/// Longest command line read (RFC 5321's limit is 512 with CRLF).
const MAX_LINE: u64 = 1024;
/// Refusal dialogues at once per relay.
pub const AT_ONCE: usize = 64;

/// The reply to one command line after the 554, and whether the session ends with it.
pub fn reply(line: &[u8]) -> (&'static [u8], bool) {
    let verb: Vec<u8> = line
        .iter()
        .take_while(|b| !b.is_ascii_whitespace())
        .map(u8::to_ascii_uppercase)
        .collect();
    if verb == b"QUIT" {
        (b"221 2.0.0 Bye\r\n", true)
    } else {
        (
            b"503 5.5.1 Error: access denied for this client, send QUIT\r\n",
            false,
        )
    }
}

/// Writes `banner` (the 554), then answers the client's commands until QUIT, a close, an
/// error, [`LINGER`] or [`MAX_COMMANDS`].
pub async fn dialogue(client: TcpStream, banner: &[u8]) {
    let mut r = BufReader::new(client);
    if r.get_mut().write_all(banner).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, answer(&mut r)).await;
    let _ = r.get_mut().shutdown().await;
}

async fn answer(r: &mut BufReader<TcpStream>) {
    let mut line = Vec::new();
    for _ in 0..MAX_COMMANDS {
        line.clear();
        let read = (&mut *r).take(MAX_LINE).read_until(b'\n', &mut line).await;
        if !matches!(read, Ok(n) if n > 0) {
            return;
        }
        let (text, end) = reply(&line);
        if r.get_mut().write_all(text).await.is_err() || end {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quit_ends_and_the_rest_is_503() {
        assert_eq!(reply(b"QUIT\r\n"), (&b"221 2.0.0 Bye\r\n"[..], true));
        assert!(reply(b"quit\r\n").1);
        for cmd in [
            &b"EHLO app\r\n"[..],
            b"MAIL FROM:<a@b>\r\n",
            b"\r\n",
            b"QUITTER\r\n",
        ] {
            let (text, end) = reply(cmd);
            assert!(text.starts_with(b"503 5.5.1"), "{cmd:?}");
            assert!(!end);
        }
    }
}
