//! Codec throughput (criterion): the per-message work on the hot paths — parsing a request head,
//! Engine.IO packets and polling payloads, Socket.IO events with and without binary attachments
//! (reassembly included), and SSE event encoding.
//!
//! Run: `cargo bench --bench codecs` (short run: `-- --warm-up-time 1 --measurement-time 2`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use tidings::proto::{eio, http, sio, sse};

/// A typical Engine.IO polling GET from a browser, about 400 bytes.
const POLLING_GET: &[u8] =
    b"GET /socket.io/?EIO=4&transport=polling&t=PX1n2aB&sid=lv_VI97HAXpY6yYWAAAC HTTP/1.1\r\n\
Host: localhost:3000\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Origin: http://localhost:8080\r\n\
Connection: keep-alive\r\n\
Referer: http://localhost:8080/\r\n\
Cookie: io=lv_VI97HAXpY6yYWAAAC\r\n\
\r\n";

fn http_head(c: &mut Criterion) {
    let limits = http::HeadLimits::default();
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Bytes(POLLING_GET.len() as u64));
    g.bench_function("polling_get_scan_and_parse", |b| {
        b.iter(|| {
            let mut scanner = http::HeadScanner::new();
            let end = scanner
                .find_head_end(black_box(POLLING_GET), &limits)
                .unwrap()
                .unwrap();
            let (head, _) = http::parse_request_head(&POLLING_GET[..end], &limits).unwrap();
            black_box(head.query_param("sid"))
        })
    });
    g.finish();
}

fn chat_message() -> String {
    json!(["chat", {"room": "general", "user": "alice", "text": "hello everyone, how is it going?"}])
        .to_string()
}

fn eio_packets(c: &mut Criterion) {
    let text = format!("42{}", chat_message());
    let packet = eio::Packet::Message(eio::Data::Text(text[1..].to_owned()));
    let mut g = c.benchmark_group("eio");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("packet_decode", |b| {
        b.iter(|| eio::decode_text_packet(black_box(&text)).unwrap())
    });
    g.bench_function("packet_encode", |b| {
        b.iter(|| black_box(&packet).encode_text().unwrap())
    });

    // Ten packets as a polling payload: text messages, a ping, and a 64-byte binary message.
    let mut packets: Vec<eio::Packet> = (0..8)
        .map(|i| {
            eio::Packet::Message(eio::Data::Text(format!(
                "2[\"tick\",{i},\"{}\"]",
                "x".repeat(40)
            )))
        })
        .collect();
    packets.push(eio::Packet::Ping(String::new()));
    packets.push(eio::Packet::Message(eio::Data::Binary((0..64).collect())));
    let body = eio::encode_payload(&packets);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("payload_decode_10", |b| {
        b.iter(|| eio::decode_payload(black_box(&body), 16).unwrap())
    });
    g.bench_function("payload_encode_10", |b| {
        b.iter(|| eio::encode_payload(black_box(&packets)))
    });
    g.finish();
}

fn sio_events(c: &mut Criterion) {
    let limits = sio::DecodeLimits::default();
    let args: Vec<Value> = match serde_json::from_str::<Value>(&chat_message()).unwrap() {
        Value::Array(mut a) => a.split_off(1),
        _ => unreachable!(),
    };
    let plain = sio::Packet::event("/", "chat", args.clone(), Some(12));
    let plain_text = sio::encode_text(&plain);

    // Two 1 KiB attachments, referenced by placeholders inside an object.
    let mut binary = sio::Packet::event(
        "/",
        "upload",
        [json!({"name": "pic.png", "thumb": sio::placeholder(0), "full": sio::placeholder(1)})],
        Some(13),
    );
    binary.attachments = vec![vec![0xab; 1024], vec![0xcd; 1024]];
    let (binary_text, binary_atts) = sio::encode(&binary);
    let binary_text = binary_text.clone();
    let binary_atts = binary_atts.to_vec();
    let binary_bytes = binary_text.len() + binary_atts.iter().map(Vec::len).sum::<usize>();

    let mut g = c.benchmark_group("sio");
    g.throughput(Throughput::Bytes(plain_text.len() as u64));
    g.bench_function("event_encode", |b| {
        b.iter(|| sio::encode_text(black_box(&plain)))
    });
    g.bench_function("event_decode", |b| {
        b.iter(|| sio::decode_text(black_box(&plain_text), &limits).unwrap())
    });
    g.throughput(Throughput::Bytes(binary_bytes as u64));
    g.bench_function("binary_event_2att_encode", |b| {
        b.iter(|| {
            let (text, atts) = sio::encode(black_box(&binary));
            black_box(atts);
            text
        })
    });
    g.bench_function("binary_event_2att_decode_reassemble", |b| {
        b.iter(|| {
            let mut r = sio::Reassembler::new(limits);
            assert!(r.push_text(black_box(&binary_text)).unwrap().is_none());
            assert!(r.push_binary(binary_atts[0].clone()).unwrap().is_none());
            r.push_binary(binary_atts[1].clone()).unwrap().unwrap()
        })
    });
    g.finish();
}

fn sse_events(c: &mut Criterion) {
    let small = r#"{"user":"alice","text":"hello everyone"}"#;
    let big: String = (0..64)
        .map(|i| format!("line {i:03}: {}\n", "y".repeat(53)))
        .collect();
    assert!(big.len() >= 4096);
    let mut g = c.benchmark_group("sse");
    let mut out = Vec::with_capacity(8192);
    for (name, data) in [
        ("encode_event_small", small),
        ("encode_event_4k_multiline", &big),
    ] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                sse::encode_event(
                    &mut out,
                    Some("chat"),
                    Some("1700000000:42"),
                    black_box(data),
                )
                .unwrap();
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, http_head, eio_packets, sio_events, sse_events);
criterion_main!(benches);
