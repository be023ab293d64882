//! DATA and BDAT framing (`MessageReceiver`): how TCP splits the bytes
//! must not matter; an accepted message never holds a bare CR or LF (the
//! smuggling defence); BDAT content is kept verbatim; DATA content
//! re-stuffed and received again is the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailveil::smtp::data::{MessageReceiver, Progress, stuffed_pieces};
use mailveil::smtp::message::MessageBuf;

const MAX_SIZE: usize = 4096;
const MAX_LINE: usize = 200;

/// Feeds DATA bytes in the given pieces; returns the output, the refusal,
/// and where the terminator ended (in input bytes), if it was seen.
fn receive_data(pieces: &[&[u8]]) -> (Vec<u8>, Option<String>, Option<usize>) {
    let mut r = MessageReceiver::data(MAX_SIZE, MAX_LINE);
    let mut out = MessageBuf::new(0, 512);
    let mut offset = 0;
    for piece in pieces {
        if let Progress::Done { consumed } = r.feed(piece, &mut out) {
            return (
                out.whole().to_vec(),
                r.refusal().map(|x| format!("{x:?}")),
                Some(offset + consumed),
            );
        }
        offset += piece.len();
    }
    (out.whole().to_vec(), r.refusal().map(|x| format!("{x:?}")), None)
}

fn receive_bdat(pieces: &[&[u8]]) -> (Vec<u8>, Option<String>) {
    let mut r = MessageReceiver::bdat(MAX_SIZE, MAX_LINE);
    let mut out = MessageBuf::new(0, 512);
    for piece in pieces {
        r.feed_chunk(piece, &mut out);
    }
    r.finish_chunks(&mut out);
    (out.whole().to_vec(), r.refusal().map(|x| format!("{x:?}")))
}

fn no_bare_line_endings(out: &[u8]) {
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF accepted at {i}");
        }
        if b == b'\r' {
            assert!(out.get(i + 1) == Some(&b'\n'), "bare CR accepted at {i}");
        }
    }
}

fuzz_target!(|input: &[u8]| {
    // First byte: where to split; the rest is the stream.
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let cut = (split as usize * data.len()) / 256;
    let whole: [&[u8]; 1] = [data];
    let split_two: [&[u8]; 2] = [&data[..cut], &data[cut..]];
    let bytewise: Vec<&[u8]> = data.chunks(1).collect();

    // DATA.
    let a = receive_data(&whole);
    assert_eq!(
        a,
        receive_data(&split_two),
        "DATA result depends on the split"
    );
    assert_eq!(
        a,
        receive_data(&bytewise),
        "DATA result depends on the split"
    );
    let (out, refusal, done) = a;
    assert!(out.len() <= MAX_SIZE);
    if let Some(end) = done {
        assert!(data[..end].ends_with(b".\r\n"), "terminator not at the end");
    }
    if refusal.is_none() && done.is_some() {
        no_bare_line_endings(&out);
        // Re-stuffed, the content is received as the same message.
        let stuffed: Vec<u8> = stuffed_pieces(&[&out]).collect::<Vec<_>>().concat();
        let (again, again_refusal, again_done) = receive_data(&[&stuffed]);
        assert_eq!(again_refusal, None, "re-stuffed message refused");
        assert_eq!(again_done, Some(stuffed.len()), "terminator moved");
        // A message not ending in CRLF gets one added by the stuffing.
        if out.is_empty() || out.ends_with(b"\r\n") {
            assert_eq!(again, out, "unstuff(stuff(m)) != m");
        } else {
            assert_eq!(&again[..out.len()], &out[..]);
        }
    }

    // BDAT: the same bytes as chunks.
    let b = receive_bdat(&whole);
    assert_eq!(
        b,
        receive_bdat(&split_two),
        "BDAT result depends on the split"
    );
    assert_eq!(
        b,
        receive_bdat(&bytewise),
        "BDAT result depends on the split"
    );
    let (out, refusal) = b;
    if refusal.is_none() {
        assert_eq!(out, data, "BDAT content changed");
        no_bare_line_endings(&out);
    } else {
        assert!(out.is_empty(), "a refused message keeps no bytes");
    }
});
