//! Lists in requests are bounded, and so are the errors about them: a request
//! with tens of thousands of items gets a small INVALID_ARGUMENT naming the
//! field, and changes nothing.

use std::collections::HashMap;

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic_types::StatusExt;

both_backends!(
    huge_lists_are_refused_before_any_work,
    field_violations_are_capped,
    client_text_in_violations_is_bounded,
    a_request_that_is_no_message_is_invalid,
);

/// An error the client can take whole: the details of every refusal here
/// stay far below this.
const SMALL_DETAILS: usize = 8 * 1024;

async fn huge_lists_are_refused_before_any_work(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let before = app.fingerprint().await;

    let history = app
        .users()
        .list_user_history(req(
            &fixture.admin_token,
            pb::ListUserHistoryRequest {
                user_id: fixture.admin.id.clone(),
                activities: (0..40_000).map(|i| i % 1000).collect(),
                ..Default::default()
            },
        ))
        .await;
    let refused = assert_code(history, Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), vec!["activities"]);
    assert!(
        refused.message().contains("40000") && refused.message().contains("at most 100"),
        "names the count and the bound: {}",
        refused.message()
    );
    assert!(
        refused.details().len() < SMALL_DETAILS,
        "{} bytes",
        refused.details().len()
    );

    let eans = app
        .orgs()
        .create_organisation(req(
            OPERATOR_TOKEN,
            pb::CreateOrganisationRequest {
                name: "Mange EAN ApS".into(),
                cvr: unique_cvr(),
                ean_numbers: (0..30_000).map(|i| format!("x{i:012}")).collect(),
                ..Default::default()
            },
        ))
        .await;
    let refused = assert_code(eans, Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), vec!["ean_numbers"]);
    assert!(
        refused.details().len() < SMALL_DETAILS,
        "{} bytes",
        refused.details().len()
    );

    // Lists are bounded before the caller is even looked up.
    let anonymous = app
        .users()
        .list_user_history(req(
            "",
            pb::ListUserHistoryRequest {
                user_id: fixture.admin.id.clone(),
                activities: vec![pb::HistoryActivity::UserCreated as i32; 101],
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(anonymous, Code::InvalidArgument)),
        vec!["activities"]
    );
    // Within the bound, the filter works as before.
    let filtered = app
        .users()
        .list_user_history(req(
            &fixture.admin_token,
            pb::ListUserHistoryRequest {
                user_id: fixture.admin.id.clone(),
                activities: vec![pb::HistoryActivity::UserCreated as i32; 100],
                ..Default::default()
            },
        ))
        .await
        .expect("100 filters are within the bound")
        .into_inner();
    assert_eq!(filtered.events.len(), 1);

    assert_eq!(app.fingerprint().await, before, "refused requests changed nothing");
    app.finish().await;
}

async fn field_violations_are_capped(backend: Backend) {
    let app = TestApp::start(backend).await;
    let before = app.fingerprint().await;
    // 99 bad EAN numbers, within the wire bound: the domain's rule (at most
    // 20) plus one violation per number, 100 in all.
    let created = app
        .orgs()
        .create_organisation(req(
            OPERATOR_TOKEN,
            pb::CreateOrganisationRequest {
                name: "Forkerte EAN ApS".into(),
                cvr: unique_cvr(),
                ean_numbers: (0..99).map(|i| format!("x{i}")).collect(),
                ..Default::default()
            },
        ))
        .await;
    let refused = assert_code(created, Code::InvalidArgument);
    let violations = refused.get_details_bad_request().expect("BadRequest").field_violations;
    assert_eq!(violations.len(), 51, "50 violations and a note: {violations:?}");
    assert!(violations[..50].iter().all(|v| v.field.starts_with("ean_numbers")));
    assert!(
        violations[50].description.starts_with("50 more violations left out"),
        "{:?}",
        violations[50]
    );
    assert_eq!(app.fingerprint().await, before);
    app.finish().await;
}

/// A violation that quotes the client's text (an update mask's path) is
/// bounded like the message: unbounded, 20,000 characters of it went back
/// in the details trailer, which tonic's client refuses past 16 KiB, so
/// the caller saw INTERNAL "h2 protocol error" instead of its mistake.
async fn client_text_in_violations_is_bounded(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (member, _) = app.member(&fixture, "Maske", &[]).await;
    let before = app.fingerprint().await;
    let refused = app
        .users()
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: member.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["a".repeat(20_000), "b".repeat(20_000)],
                }),
                ..Default::default()
            },
        ))
        .await;
    let refused = assert_code(refused, Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["update_mask", "update_mask"]);
    assert!(
        refused.details().len() < SMALL_DETAILS,
        "{} bytes of details",
        refused.details().len()
    );
    assert_eq!(app.fingerprint().await, before);
    app.finish().await;
}

/// Every repeated field of every request of every service, found in the
/// descriptor set (so a new one cannot be forgotten), is sent with 10,000
/// items: each must be refused as INVALID_ARGUMENT naming its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_repeated_request_field_is_bounded() {
    let app = TestApp::start(Backend::Sqlite).await;
    let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut messages = HashMap::new();
    for file in &set.file {
        for message in &file.message_type {
            collect_messages(&format!(".{}", file.package()), message, &mut messages);
        }
    }
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let before = app.fingerprint().await;
    let (mut checked, mut failures) = (Vec::new(), Vec::new());
    for file in set.file.iter().filter(|f| f.package() == "orgadmin.v1") {
        for service in &file.service {
            for method in &service.method {
                let input = messages[method.input_type()];
                for (field, body) in oversized_lists(&messages, input, "", 0) {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    let mut grpc = tonic::client::Grpc::new(channel.clone());
                    grpc.ready().await.unwrap();
                    let answer = grpc
                        .unary(req(OPERATOR_TOKEN, body), path.parse().expect("method path"), RawCodec)
                        .await;
                    // Refused by the bound itself ("holds N items; at most
                    // M"), not by a domain rule that names the same field
                    // (at most 20 EAN numbers): without the bound the
                    // domain would have read the whole list first.
                    let bounded = |status: &tonic::Status| {
                        status.get_details_bad_request().is_some_and(|b| {
                            b.field_violations
                                .iter()
                                .any(|v| v.field == field && v.description.contains("items; at most"))
                        })
                    };
                    match answer {
                        Err(status) if status.code() == Code::InvalidArgument && bounded(&status) => {}
                        other => failures.push(format!("{path} {field}: {:?}", other.map(|_| "OK"))),
                    }
                    checked.push(field);
                }
            }
        }
    }
    assert!(failures.is_empty(), "unbounded lists:\n{}", failures.join("\n"));
    for expected in [
        "activities",
        "update_mask.paths",
        "user.roles",
        "organisation.ean_numbers",
    ] {
        assert!(
            checked.iter().any(|f| f == expected),
            "{expected} not found: {checked:?}"
        );
    }
    assert_eq!(app.fingerprint().await, before);
    app.finish().await;
}

fn collect_messages<'a>(scope: &str, message: &'a DescriptorProto, out: &mut HashMap<String, &'a DescriptorProto>) {
    let name = format!("{scope}.{}", message.name());
    for nested in &message.nested_type {
        collect_messages(&name, nested, out);
    }
    out.insert(name, message);
}

const OVERSIZED: usize = 10_000;

/// For each repeated field reachable from `message` (through singular
/// message fields): its path and an encoded `message` whose only content is
/// that list with [`OVERSIZED`] default items.
fn oversized_lists(
    messages: &HashMap<String, &DescriptorProto>,
    message: &DescriptorProto,
    prefix: &str,
    depth: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for field in &message.field {
        let path = format!("{prefix}{}", field.name());
        let number = field.number() as u32;
        let length_delimited = matches!(field.r#type(), Type::String | Type::Bytes | Type::Message);
        if field.label() == Label::Repeated {
            let mut body = Vec::new();
            for _ in 0..OVERSIZED {
                if length_delimited {
                    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut body);
                } else {
                    prost::encoding::encode_key(number, prost::encoding::WireType::Varint, &mut body);
                }
                body.put_u8(0);
            }
            out.push((path, body));
        } else if field.r#type() == Type::Message
            && depth < 3
            && let Some(inner) = messages.get(field.type_name())
        {
            for (inner_path, inner_body) in oversized_lists(messages, inner, &format!("{path}."), depth + 1) {
                let mut body = Vec::new();
                prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut body);
                prost::encoding::encode_varint(inner_body.len() as u64, &mut body);
                body.extend_from_slice(&inner_body);
                out.push((inner_path, body));
            }
        }
    }
    out
}

/// A request whose bytes are no message of its type (here a login id that
/// is not UTF-8) is the caller's mistake: INVALID_ARGUMENT naming the
/// field. prost's codec said INTERNAL, which anyone could send (Login needs
/// no token) to make the service count server errors.
async fn a_request_that_is_no_message_is_invalid(backend: Backend) {
    let app = TestApp::start(backend).await;
    let before = app.fingerprint().await;
    let mut grpc = tonic::client::Grpc::new(app.channel());
    grpc.ready().await.unwrap();
    // Field 1 (login_id), length-delimited, one byte that is no UTF-8.
    let answer = grpc
        .unary(
            req("", vec![0x0a, 0x01, 0xff]),
            "/orgadmin.v1.AuthService/Login".parse().expect("method path"),
            RawCodec,
        )
        .await;
    let refused = assert_code(answer, Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["login_id"]);
    assert_eq!(reason(&refused), "INVALID_ARGUMENT");
    assert_eq!(app.fingerprint().await, before);
    app.finish().await;
}

/// Sends and receives messages as raw bytes.
struct RawCodec;

struct RawEncoder;

struct RawDecoder;

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

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}
