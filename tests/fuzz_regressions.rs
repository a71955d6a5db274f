//! Inputs the `engine` fuzz target (`fuzz/`) flagged, kept as
//! tests over the scripted mock transport.

mod support;

use anyframe::QueuedFramed;
use anyframe::codecs::{JsonCodec, LineCodec, PackFormat, PackstringCodec};
use support::{MockIo, Step, data};

/// Reads a JSON text and then a frame of another type, with the bytes
/// delivered in `steps`; returns what the second read gave.
async fn json_then<D>(steps: Vec<Step>, next: D) -> anyframe::Result<D::Item>
where
    D: tokio_util::codec::Decoder + Send + 'static,
    D::Item: Send + 'static,
    D::Error: Into<anyframe::Error>,
{
    let (io, _) = MockIo::new(steps);
    let mut conn = QueuedFramed::new(io);
    let v: serde_json::Value = conn.read(JsonCodec::new()).await?;
    assert_eq!(v, serde_json::json!({"a": 1}));
    conn.read(next).await
}

/// Found by the engine target (and independently by the engine's property
/// test, fixed in 4670014): after 174892e a JSON read also consumed the
/// whitespace up to the first `\n` after its text *if it arrived with the
/// text*. When the next frame is data of another type that starts with
/// such bytes, those bytes were lost, depending on how the input was split:
/// here a `v` packstring of length 10 (`0a 00`) lost its first prefix byte
/// when it arrived in the same read as the JSON text. Only NDJSON mode eats
/// the separator now.
#[tokio::test]
async fn a_packstring_after_a_json_text_loses_no_byte_however_it_arrives() {
    let mut wire = br#"{"a":1}"#.to_vec();
    let split_at = wire.len();
    wire.extend_from_slice(&[0x0a, 0x00]);
    wire.extend_from_slice(b"0123456789");
    let fmt = PackFormat::U16Le;
    let apart = json_then(
        vec![
            data(&wire[..split_at]),
            Step::Pending,
            data(&wire[split_at..]),
            Step::Eof,
        ],
        PackstringCodec::new(fmt),
    )
    .await
    .unwrap();
    assert_eq!(&apart[..], b"0123456789");
    let together = json_then(vec![data(&wire), Step::Eof], PackstringCodec::new(fmt)).await;
    assert_eq!(together.unwrap(), apart);
}

/// The same hazard seen from a line read: an empty line after a JSON text
/// is read, or silently dropped, depending on the split.
#[tokio::test]
async fn an_empty_line_after_a_json_text_does_not_depend_on_the_split() {
    let wire = b"{\"a\":1}\nnext\n";
    let apart = json_then(
        vec![data(&wire[..7]), Step::Pending, data(&wire[7..]), Step::Eof],
        LineCodec::new(),
    )
    .await
    .unwrap();
    let together = json_then(vec![data(wire), Step::Eof], LineCodec::new())
        .await
        .unwrap();
    assert_eq!(together, apart);
}
