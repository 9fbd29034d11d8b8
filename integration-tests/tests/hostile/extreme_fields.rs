//! Issue 17, finding 4: a panic from one field. Every RPC of the policy store and of admission
//! is sent messages whose fields take extreme values (the largest and smallest integers,
//! durations of 2^40 s and negative nanos, timestamps outside any calendar, empty and 64 KB
//! strings) and random ones, built from the services' own descriptors, with every kind of
//! credential. Each answer must be a gRPC status a caller can act on: never `Internal` or
//! `Unknown` (a panic, or a dropped stream) and never a transport failure; and after each
//! method the servers still answer a normal call of another tenant.

use std::collections::HashMap;
use std::str::FromStr;

use bytes::{Buf, BufMut};
use portcullis_admission::testing::StackOptions;
use portcullis_integration_tests::admission::{Env, container, create_pod, pod, pod_spec, review};
use portcullis_integration_tests::store::{Api, by_name, policy_doc};
use portcullis_policy_store::ServiceOptions;
use portcullis_policy_store::testing::authed;
use portcullis_server::Mode;
use portcullis_server::rate_limit::RateLimitConfig;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Random messages per method (on top of one message per extreme): enough to mix extremes
/// across fields, few enough for the suite to take seconds.
const RANDOM_CASES: usize = 12;
/// How deep nested messages are filled.
const MAX_DEPTH: usize = 4;
/// The cluster the generated references name (a reference to something real reaches the
/// handlers' arithmetic, not only their lookups).
const VICTIM: &str = "victim";

// ---------------------------------------------------------------------------------------
// Raw protobuf over tonic

/// Sends and receives messages as the bytes they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// One RPC: its path, input type and whether the client streams.
#[derive(Debug, Clone)]
struct Method {
    path: String,
    input: String,
    streaming: bool,
}

/// Calls `method` once with `body`; the first response message's outcome.
async fn call(channel: &Channel, method: &Method, key: &str, body: Vec<u8>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("transport not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_str(&method.path).unwrap();
    if method.streaming {
        let request = authed(key, futures::stream::iter([body]));
        let mut responses = grpc.streaming(request, path, RawCodec).await?.into_inner();
        responses.message().await.map(drop)
    } else {
        grpc.unary(authed(key, body), path, RawCodec).await.map(drop)
    }
}

// ---------------------------------------------------------------------------------------
// Messages from the descriptors

/// Every message type by full name (`.pkg.Name`), and the RPCs of the tested services.
struct Schema {
    messages: HashMap<String, DescriptorProto>,
    methods: Vec<Method>,
}

impl Schema {
    fn load() -> Schema {
        let set = FileDescriptorSet::decode(portcullis_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut messages = HashMap::new();
        let mut methods = Vec::new();
        for file in &set.file {
            let package = file.package();
            for message in &file.message_type {
                collect(&format!(".{package}"), message, &mut messages);
            }
            if package != "portcullis.policystore.v1" && package != "portcullis.admission.v1" {
                continue;
            }
            for service in &file.service {
                for m in &service.method {
                    methods.push(Method {
                        path: format!("/{package}.{}/{}", service.name(), m.name()),
                        input: m.input_type().to_owned(),
                        streaming: m.client_streaming(),
                    });
                }
            }
        }
        Schema { messages, methods }
    }
}

fn collect(scope: &str, message: &DescriptorProto, out: &mut HashMap<String, DescriptorProto>) {
    let name = format!("{scope}.{}", message.name());
    for nested in &message.nested_type {
        collect(&name, nested, out);
    }
    out.insert(name, message.clone());
}

/// Where a message's field values come from.
enum Source<'a> {
    /// Every field set to a plausible value (strings name the victim cluster, timestamps are
    /// in the future) except leaf number `target`, which takes the `extreme`-th value of its
    /// pool; `seen` counts the leaves filled so far.
    OneExtreme { target: usize, extreme: usize, seen: usize },
    /// Random choices: fields left out or repeated, any value of the pools.
    Random(std::slice::Iter<'a, u64>),
}

impl Source<'_> {
    /// The value of the next leaf: `baseline`, or one of `pool`.
    fn leaf<T: Clone>(&mut self, pool: &[T], baseline: T) -> T {
        match self {
            Source::OneExtreme { target, extreme, seen } => {
                *seen += 1;
                if *seen - 1 == *target {
                    pool[*extreme % pool.len()].clone()
                } else {
                    baseline
                }
            }
            Source::Random(choices) => pool[choices.next().copied().unwrap_or(0) as usize % pool.len()].clone(),
        }
    }

    /// How many times to set a field: once, or for random messages 0-1 (0-3 repeated).
    fn count(&mut self, repeated: bool) -> usize {
        match self {
            Source::OneExtreme { .. } => 1,
            Source::Random(choices) => {
                let n = choices.next().copied().unwrap_or(0) as usize;
                if repeated {
                    n % 4
                } else {
                    usize::from(!n.is_multiple_of(4))
                }
            }
        }
    }
}

/// Integers as varints: both ends of every width, signs, and values past each width.
const VARINTS: [u64; 14] = [
    0,
    1,
    u64::MAX,
    i64::MAX as u64,
    i64::MIN as u64,
    i32::MAX as u64,
    i32::MIN as i64 as u64,
    u32::MAX as u64,
    1 << 40,
    1 << 31,
    253_402_300_800,             // 10000-01-01T00:00:00Z in seconds
    (-62_135_596_801i64) as u64, // just before 0001-01-01
    1_000_000_000,
    1_000,
];

/// Strings: empty, a name that exists, junk, long and odd text.
fn strings() -> Vec<String> {
    vec![
        String::new(),
        VICTIM.to_owned(),
        "x".repeat(64 * 1024),
        " ".to_owned(),
        "-1".to_owned(),
        "99999999999999999999999".to_owned(),
        "../../etc/passwd".to_owned(),
        "名前\u{0}\u{202e}".to_owned(),
        "{\"name\": 1e999999}".to_owned(),
        "pc_not_a_key".to_owned(),
        "a.b".to_owned(),
        "ALL".to_owned(),
        format!("{}", i64::MIN),
        "9999-12-31T23:59:59Z".to_owned(),
    ]
}

/// Bytes fields carry documents: junk, empty, and a real AdmissionReview.
fn byte_strings() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = strings().into_iter().map(String::into_bytes).collect();
    out.push(steady_review().to_string().into_bytes());
    out.push(
        review("CREATE", ("", "v1", "Pod"), "pods", "default", "p")
            .to_string()
            .into_bytes(),
    );
    out.push(vec![0xff, 0xfe, 0x00]);
    out
}

/// A review admission answers: a pod without host networking.
fn steady_review() -> serde_json::Value {
    create_pod(pod(
        "p",
        "default",
        pod_spec(false, vec![container("c", "nginx:1.25", false)]),
    ))
}

/// Encodes one message of type `name`.
fn encode_message(schema: &Schema, name: &str, source: &mut Source<'_>, depth: usize, out: &mut Vec<u8>) {
    // Plausible seconds: a minute for a duration, a month ahead for a timestamp.
    let seconds = match name {
        ".google.protobuf.Duration" => 60,
        _ => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            now.as_secs() + 30 * 86_400
        }
    };
    // The well-known types the services use are not in the descriptor set.
    let fields: Vec<(u32, Type, bool, String)> = match name {
        ".google.protobuf.Duration" | ".google.protobuf.Timestamp" => {
            vec![
                (1, Type::Int64, false, String::new()),
                (2, Type::Int32, false, String::new()),
            ]
        }
        ".google.protobuf.FieldMask" => vec![(1, Type::String, true, String::new())],
        _ => match schema.messages.get(name) {
            Some(message) => message
                .field
                .iter()
                .map(|f| {
                    (
                        f.number() as u32,
                        f.r#type(),
                        f.label() == Label::Repeated,
                        f.type_name().to_owned(),
                    )
                })
                .collect(),
            None => return,
        },
    };
    let well_known = name.starts_with(".google.protobuf.");
    let strings = strings();
    let byte_strings = byte_strings();
    for (tag, kind, repeated, type_name) in fields {
        for _ in 0..source.count(repeated) {
            match kind {
                Type::Int64 | Type::Uint64 | Type::Int32 | Type::Uint32 | Type::Sint32 | Type::Sint64 | Type::Enum => {
                    let baseline = match (well_known, tag) {
                        (true, 1) => seconds,
                        (true, _) => 0,
                        (false, _) => 1,
                    };
                    encode_key(tag, WireType::Varint, out);
                    encode_varint(source.leaf(&VARINTS, baseline), out);
                }
                Type::Bool => {
                    encode_key(tag, WireType::Varint, out);
                    encode_varint(source.leaf(&[0, 1], 0), out);
                }
                Type::Fixed64 | Type::Sfixed64 | Type::Double => {
                    encode_key(tag, WireType::SixtyFourBit, out);
                    out.put_u64_le(source.leaf(&VARINTS, 1));
                }
                Type::Fixed32 | Type::Sfixed32 | Type::Float => {
                    encode_key(tag, WireType::ThirtyTwoBit, out);
                    out.put_u32_le(source.leaf(&VARINTS, 1) as u32);
                }
                Type::String => {
                    let s = source.leaf(&strings, VICTIM.to_owned());
                    prost::encoding::string::encode(tag, &s, out);
                }
                Type::Bytes => {
                    let b = source.leaf(&byte_strings, steady_review().to_string().into_bytes());
                    prost::encoding::bytes::encode(tag, &b, out);
                }
                Type::Message if depth < MAX_DEPTH => {
                    let mut inner = Vec::new();
                    encode_message(schema, &type_name, source, depth + 1, &mut inner);
                    prost::encoding::bytes::encode(tag, &inner, out);
                }
                Type::Message | Type::Group => {}
            }
        }
    }
}

/// The message of `method` with every field plausible but leaf `target` (`None`: none), and
/// how many leaves it has.
fn one_extreme(schema: &Schema, method: &Method, target: Option<usize>, extreme: usize) -> (Vec<u8>, usize) {
    let mut source = Source::OneExtreme {
        target: target.unwrap_or(usize::MAX),
        extreme,
        seen: 0,
    };
    let mut body = Vec::new();
    encode_message(schema, &method.input, &mut source, 0, &mut body);
    let Source::OneExtreme { seen, .. } = source else {
        unreachable!()
    };
    (body, seen)
}

// ---------------------------------------------------------------------------------------
// The scenario

/// Why an answer is not one a caller can act on: a stream reset (a panicking handler shows as
/// `Cancelled` or `ResourceExhausted` "h2 protocol error", with the transport error as its
/// source), or `Internal`/`Unknown` (a panic caught, a bug).
fn unusable(result: &Result<(), Status>) -> Option<String> {
    let Err(status) = result else { return None };
    let transport = std::error::Error::source(status).is_some() || status.message().contains("h2 protocol error");
    let bad_code = matches!(
        status.code(),
        Code::Internal | Code::Unknown | Code::Unavailable | Code::DataLoss | Code::Cancelled
    );
    (transport || bad_code).then(|| format!("{:?}: {}", status.code(), status.message()))
}

pub async fn every_rpc_survives_extreme_fields(mode: Mode) {
    // Every call must reach its handler: the store's per-tenant rate limit is lifted (the
    // flood of calls is this test's means, not its attack).
    let options = StackOptions {
        store: ServiceOptions {
            rate_limit: RateLimitConfig::unlimited(),
            ..ServiceOptions::default()
        },
        ..StackOptions::new(mode)
    };
    let env = Env::start(options, &policy_doc("p", "block")).await;
    let store = &env.stack.store;
    let mut admin = env.admin.clone();
    admin.register_cluster(VICTIM, by_name("p")).await.unwrap();
    let mut operator = Api::new(store, &store.operator_key).await;
    let bystander_key = operator.create_tenant("bystander").await.unwrap();
    let mut bystander = operator.with_key(&bystander_key);
    bystander.create_policy(&policy_doc("steady", "log")).await.unwrap();

    let store_channel = store.channel().await.unwrap();
    let admission_channel = env.stack.channel(0).await.unwrap();
    let keys = [
        ("the admin key", store.admin_key.clone()),
        ("the operator key", store.operator_key.clone()),
        ("the service credential", store.service_token.clone()),
        ("the connector key", env.connector_key.clone()),
    ];
    let schema = Schema::load();
    assert!(schema.methods.len() >= 48, "{} methods", schema.methods.len());
    let choices = prop::collection::vec(any::<u64>(), 256);
    let mut runner = TestRunner::default();
    let mut failures = Vec::new();
    let mut sent_calls = 0_usize;

    for method in &schema.methods {
        let channel = if method.path.starts_with("/portcullis.admission.") {
            &admission_channel
        } else {
            &store_channel
        };
        // The key the method serves: the first whose plausible message is not refused for
        // who sends it (methods no key may call get the admin key).
        let (plain, leaves) = one_extreme(&schema, method, None, 0);
        let mut serving = 0;
        for (i, (_, key)) in keys.iter().enumerate() {
            let result = call(channel, method, key, plain.clone()).await;
            if !result
                .as_ref()
                .is_err_and(|s| matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated))
            {
                serving = i;
                break;
            }
        }
        let mut bodies = Vec::new();
        for target in 0..leaves {
            for extreme in 0..VARINTS.len().max(byte_strings().len()) {
                bodies.push((serving, one_extreme(&schema, method, Some(target), extreme).0));
            }
        }
        for _ in 0..RANDOM_CASES {
            let picks = choices.new_tree(&mut runner).unwrap().current();
            let mut body = Vec::new();
            encode_message(&schema, &method.input, &mut Source::Random(picks.iter()), 0, &mut body);
            bodies.push((picks[0] as usize % keys.len(), body));
        }
        let mut sent = std::collections::HashSet::new();
        bodies.retain(|b| sent.insert(b.clone()));
        for (k, body) in bodies {
            sent_calls += 1;
            let (key_name, key) = &keys[k];
            let result = call(channel, method, key, body.clone()).await;
            if let Some(why) = unusable(&result) {
                let shown = &body[..body.len().min(256)];
                failures.push(format!(
                    "{} as {key_name}: {why}\n  request bytes: {shown:02x?}",
                    method.path
                ));
            }
        }
        // Both servers still answer another tenant's normal calls.
        let steady = bystander.get_policy(by_name("steady")).await;
        assert!(steady.is_ok(), "after {}: {steady:?}", method.path);
        let judged = env.review(&steady_review()).await;
        assert!(
            judged.is_ok() || judged.as_ref().is_err_and(|s| s.code() == Code::ResourceExhausted),
            "after {}: {judged:?}",
            method.path
        );
    }
    // The first failure of each method.
    let mut first = std::collections::BTreeMap::new();
    for f in &failures {
        first
            .entry(f.split(' ').next().unwrap_or_default())
            .or_insert(f.as_str());
    }
    assert!(
        failures.is_empty(),
        "{} answers no caller can act on; the first of each method:\n{}",
        failures.len(),
        first.values().cloned().collect::<Vec<_>>().join("\n")
    );
    crate::report::row(
        "4",
        "every RPC with extreme and random field values, with every credential",
        &format!(
            "{sent_calls} calls over {} methods: no panic, no transport error, no Internal",
            schema.methods.len()
        ),
        "another tenant's policy read and review answered after every method",
    );
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    every_rpc_survives_extreme_fields,
}
