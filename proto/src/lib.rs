//! The orgadmin.v1 gRPC contract, generated from `proto/orgadmin/v1/`.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("orgadmin.v1");

    /// The encoded descriptor set of every orgadmin.v1 file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orgadmin_descriptor");
}

/// The `ErrorInfo.domain` of every orgadmin error: the service's mapping of
/// domain errors and this crate's codec both name it.
pub const ERROR_DOMAIN: &str = "orgadmin";

/// The codec of every orgadmin.v1 service and client: prost's, but a
/// request that is no valid message of its type (a string that is not
/// UTF-8, a truncated field) is the caller's mistake, INVALID_ARGUMENT
/// naming the field, where prost answers INTERNAL (anyone could make the
/// service report server errors, and a client retried what can never work).
pub mod codec {
    use std::marker::PhantomData;

    use prost::Message;
    use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
    use tonic::{Code, Status};
    use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
    use tonic_types::{ErrorDetails, StatusExt};

    #[derive(Debug, Clone)]
    pub struct RequestCodec<T, U> {
        _types: PhantomData<(T, U)>,
    }

    impl<T, U> Default for RequestCodec<T, U> {
        fn default() -> Self {
            Self { _types: PhantomData }
        }
    }

    impl<T, U> Codec for RequestCodec<T, U>
    where
        T: Message + Send + 'static,
        U: Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = CallerDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
        }

        fn decoder(&mut self) -> Self::Decoder {
            CallerDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
        }
    }

    #[derive(Debug, Clone)]
    pub struct CallerDecoder<U>(ProstDecoder<U>);

    impl<U: Message + Default> Decoder for CallerDecoder<U> {
        type Item = U;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
            self.0.decode(buf).map_err(|status| match status.code() {
                Code::Internal => not_a_message(status.message()),
                _ => status,
            })
        }

        fn buffer_settings(&self) -> BufferSettings {
            self.0.buffer_settings()
        }
    }

    /// INVALID_ARGUMENT with the service's details (ErrorInfo reason
    /// INVALID_ARGUMENT, a BadRequest naming the field), from prost's
    /// message: `failed to decode Protobuf message: Inner.field: Outer.inner:
    /// <what>`, the innermost field first.
    pub fn not_a_message(prost_message: &str) -> Status {
        let rest = prost_message
            .strip_prefix("failed to decode Protobuf message: ")
            .unwrap_or(prost_message);
        // Leading `Message.field` parts (no spaces), then what was wrong.
        let parts: Vec<&str> = rest.split(": ").collect();
        let stacked = parts
            .iter()
            .take_while(|part| !part.contains(' ') && part.contains('.'))
            .count()
            .min(parts.len().saturating_sub(1));
        let mut path: Vec<&str> = parts[..stacked]
            .iter()
            .filter_map(|part| part.split_once('.').map(|(_, field)| field))
            .collect();
        path.reverse();
        let what = parts[stacked..].join(": ");
        let what = if what.is_empty() {
            "not a valid message".to_owned()
        } else {
            what
        };
        // prost names a oneof's field by its Rust oneof (`part.spec`); the
        // path is what prost says, which for most fields is the request's.
        let field = path.join(".");
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation(field.clone(), format!("is not a valid value of its type: {what}"));
        // The reason's word is the domain's `Reason::InvalidArgument`, which
        // this crate cannot see (it depends on no crate of ours).
        details.set_error_info(
            "INVALID_ARGUMENT",
            crate::ERROR_DOMAIN,
            std::collections::HashMap::new(),
        );
        // Decoded on either side: a server's request, a client's response.
        let message = if field.is_empty() {
            format!("the message is not valid protobuf: {what}")
        } else {
            format!("the message is not valid protobuf: {field}: {what}")
        };
        Status::with_error_details(Code::InvalidArgument, message, details)
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    /// prost's messages, read into the field path (outermost first) and
    /// what was wrong; a key error names no field.
    #[test]
    fn prost_messages_name_their_field() {
        let nested = super::codec::not_a_message(
            "failed to decode Protobuf message: Inner.name: Outer.inner: invalid string value: data is not UTF-8 encoded",
        );
        let violations = nested.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "inner.name");
        assert_eq!(
            nested.message(),
            "the message is not valid protobuf: inner.name: invalid string value: data is not UTF-8 encoded"
        );
        let keyless = super::codec::not_a_message("failed to decode Protobuf message: invalid tag value: 0");
        assert_eq!(
            keyless.message(),
            "the message is not valid protobuf: invalid tag value: 0"
        );
        assert_eq!(keyless.code(), tonic::Code::InvalidArgument);
    }
}
