//! Bounded capture of a test's output: the head and the tail are kept, the middle is dropped
//! and counted, so a test that prints gigabytes costs the worker a fixed amount of memory.
//! Pure: it must not read pipes (`process` does).

use std::collections::VecDeque;

/// Output captured so far.
pub struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    half: usize,
    dropped: u64,
}

impl Capture {
    /// Keep at most `limit` bytes: half from the start, half from the end.
    pub fn new(limit: usize) -> Self {
        let half = limit / 2;
        Capture { head: Vec::new(), tail: VecDeque::new(), half, dropped: 0 }
    }

    /// The most bytes it keeps.
    pub fn limit(&self) -> usize {
        self.half * 2
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.head.len() < self.half {
            let take = bytes.len().min(self.half - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.is_empty() {
            return;
        }
        if bytes.len() >= self.half {
            self.dropped += (self.tail.len() + bytes.len() - self.half) as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.half..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.half);
        self.tail.drain(..overflow);
        self.dropped += overflow as u64;
        self.tail.extend(bytes);
    }

    /// The kept bytes (with a marker where the middle was dropped) and how many were dropped.
    pub fn finish(self) -> (Vec<u8>, u64) {
        let mut out = self.head;
        if self.dropped > 0 {
            out.extend_from_slice(
                format!("\n[... testgrid dropped {} bytes of output ...]\n", self.dropped).as_bytes(),
            );
        }
        out.extend(self.tail);
        (out, self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = Capture::new(100);
        c.push(b"hello ");
        c.push(b"world");
        assert_eq!(c.finish(), (b"hello world".to_vec(), 0));
    }

    #[test]
    fn large_output_keeps_head_and_tail() {
        let mut c = Capture::new(10);
        for chunk in [&b"abc"[..], b"defgh", b"ijklmnop", b"qr", b"stuvwxyz"] {
            c.push(chunk);
        }
        let (out, dropped) = c.finish();
        assert_eq!(dropped, 26 - 10);
        assert!(out.starts_with(b"abcde"));
        assert!(out.ends_with(b"vwxyz"));
    }

    #[test]
    fn one_huge_chunk() {
        let mut c = Capture::new(4);
        c.push(&[b'x'; 1000]);
        let (out, dropped) = c.finish();
        assert_eq!(dropped, 996);
        assert!(out.starts_with(b"xx\n[...") && out.ends_with(b"...]\nxx"));
    }
}
