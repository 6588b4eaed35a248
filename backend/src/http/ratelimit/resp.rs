//! A minimal Redis client over tokio: RESP2 requests and replies, AUTH, SELECT, SCRIPT LOAD,
//! EVALSHA and EVAL. This is all the rate limit needs; the `redis` crate would add its
//! parser stack (combine), URL parsing and connection manager for the same four commands.

use crate::redis_target::RedisTarget;
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest reply accepted (the rate-limit script answers a few bytes).
const MAX_REPLY: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn protocol(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Conn {
    /// Connects, authenticates and selects the database.
    pub async fn connect(target: &RedisTarget) -> io::Result<Conn> {
        let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(512),
        };
        if let Some(password) = &target.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &target.username {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            let reply = conn.call(&args).await?;
            if let Reply::Error(e) = reply {
                return Err(protocol(format!("AUTH refused: {e}")));
            }
        }
        if target.db != 0 {
            let db = target.db.to_string();
            if let Reply::Error(e) = conn.call(&[b"SELECT", db.as_bytes()]).await? {
                return Err(protocol(format!("SELECT {db} refused: {e}")));
            }
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply. A Redis error is `Ok(Reply::Error)`; an I/O or
    /// protocol error leaves the connection unusable.
    pub async fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut out = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out).await?;
        loop {
            if let Some((reply, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(reply);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(protocol("reply too large"));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One reply from the start of `buf` and the bytes it used, or None if incomplete.
pub fn parse(buf: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..end].split_first() else {
        return Err(protocol("empty reply line"));
    };
    let text = std::str::from_utf8(line).map_err(|_| protocol("reply line is not UTF-8"))?;
    let after = end + 2;
    let number = || -> io::Result<i64> {
        text.parse()
            .map_err(|_| protocol(format!("bad number {text:?}")))
    };
    match kind {
        b'+' => Ok(Some((Reply::Simple(text.to_string()), after))),
        b'-' => Ok(Some((Reply::Error(text.to_string()), after))),
        b':' => Ok(Some((Reply::Int(number()?), after))),
        b'$' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let n = usize::try_from(n).map_err(|_| protocol("bad length"))?;
            if n > MAX_REPLY {
                return Err(protocol("bulk reply too large"));
            }
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            let data = buf[after..after + n].to_vec();
            Ok(Some((Reply::Bulk(Some(data)), after + n + 2)))
        }
        b'*' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            let n = usize::try_from(n).map_err(|_| protocol("bad length"))?;
            if n > 1024 {
                return Err(protocol("array reply too large"));
            }
            let mut items = Vec::with_capacity(n);
            let mut at = after;
            for _ in 0..n {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(protocol(format!("unknown reply type {:?}", other as char))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_and_waits_for_more() {
        let full = b"*2\r\n:1\r\n$3\r\nabc\r\n+OK\r\n";
        let (reply, used) = parse(full).unwrap().unwrap();
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                Reply::Int(1),
                Reply::Bulk(Some(b"abc".to_vec()))
            ]))
        );
        assert_eq!(&full[used..], b"+OK\r\n");
        for cut in 0..used {
            assert!(
                parse(&full[..cut]).unwrap().is_none(),
                "incomplete at {cut}"
            );
        }
        let (reply, _) = parse(b"-NOSCRIPT No matching script\r\n").unwrap().unwrap();
        assert_eq!(reply, Reply::Error("NOSCRIPT No matching script".into()));
        assert!(parse(b"?x\r\n").is_err());
    }
}
