//! Micro-benchmarks of usage extraction and pricing lookups (`aigw_providers::{usage, pricing}`).
//!
//! `cargo bench -p aigw-benches --bench usage` (add `-- --quick` for a fast run).

use std::fmt::Write as _;
use std::hint::black_box;

use aigw_providers::{PricingTable, WireFormat, extract_tokens, extract_usage};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A non-streamed OpenAI chat completion of about 2 KiB.
fn openai_chat_json() -> String {
    let content = "The quick brown fox jumps over the lazy dog. ".repeat(38);
    format!(
        r#"{{"id":"chatcmpl-AjoahzpUMSC8ZGsV7h5JjqnjjMPGd","object":"chat.completion","created":1735330785,"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"system_fingerprint":"fp_0aa8d3e20b"}}"#
    )
}

/// An OpenAI chat completion stream of 200 content chunks with `stream_options.include_usage`
/// (every chunk has `"usage":null`, the last one the usage).
fn openai_chat_sse() -> String {
    let mut s = String::new();
    for i in 0..200 {
        let _ = write!(
            s,
            "data: {{\"id\":\"chatcmpl-AjoahzpUMSC8ZGsV7h5JjqnjjMPGd\",\"object\":\"chat.completion.chunk\",\"created\":1735330785,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0aa8d3e20b\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
        );
    }
    s.push_str("data: {\"id\":\"chatcmpl-AjoahzpUMSC8ZGsV7h5JjqnjjMPGd\",\"object\":\"chat.completion.chunk\",\"created\":1735330785,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0aa8d3e20b\",\"choices\":[],\"usage\":{\"prompt_tokens\":1117,\"completion_tokens\":200,\"total_tokens\":1317,\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\ndata: [DONE]\n\n");
    s
}

/// An Anthropic messages stream of 200 text deltas.
fn anthropic_sse() -> String {
    let mut s = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-20250514\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":2}}}\n\n\
         event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
         event: ping\ndata: {\"type\": \"ping\"}\n\n",
    );
    for i in 0..200 {
        let _ = write!(
            s,
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" word{i}\"}}}}\n\n"
        );
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
         event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":210}}\n\n\
         event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    s
}

fn bench_extract(c: &mut Criterion) {
    let mut group = c.benchmark_group("extract_usage");
    for (name, wire, path, body, streamed) in [
        (
            "openai_json_2k",
            WireFormat::OpenAi,
            "/chat/completions",
            openai_chat_json(),
            false,
        ),
        (
            "openai_sse_200",
            WireFormat::OpenAi,
            "/chat/completions",
            openai_chat_sse(),
            true,
        ),
        (
            "anthropic_sse_200",
            WireFormat::Anthropic,
            "/v1/messages",
            anthropic_sse(),
            true,
        ),
    ] {
        let usage = extract_usage(wire, path, body.as_bytes(), streamed);
        assert!(usage.tokens_in.is_some() && usage.tokens_out.is_some() && usage.model.is_some());
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| extract_usage(wire, path, black_box(body.as_bytes()), streamed))
        });
        // What the edge runs when the request named the model.
        let tokens = extract_tokens(wire, path, body.as_bytes(), streamed);
        assert_eq!(
            (tokens.tokens_in, tokens.tokens_out),
            (usage.tokens_in, usage.tokens_out)
        );
        group.bench_function(format!("{name}_tokens_only"), |b| {
            b.iter(|| extract_tokens(wire, path, black_box(body.as_bytes()), streamed))
        });
    }
    group.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let table = PricingTable::builtin();
    let mut group = c.benchmark_group("pricing_lookup");
    for (name, provider, model) in [
        ("exact", "openai", "gpt-4o-mini"),
        ("dated", "anthropic", "claude-3-5-sonnet-20241022"),
        ("miss", "openai", "some-unknown-model"),
        ("openrouter", "openrouter", "openai/gpt-4o-2024-08-06"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| table.lookup(black_box(provider), black_box(model)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_extract, bench_lookup);
criterion_main!(benches);
