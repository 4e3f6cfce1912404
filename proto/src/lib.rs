//! The orgadmin.v1 gRPC contract, generated from `proto/orgadmin/v1/`.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("orgadmin.v1");

    /// The encoded descriptor set of every orgadmin.v1 file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orgadmin_descriptor");
}

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
        let parts: Vec<&str> = rest.split(": ").collect();
        let (stack, what) = parts.split_at(parts.len().saturating_sub(1));
        let mut path: Vec<&str> = stack
            .iter()
            .filter_map(|part| part.split_once('.').map(|(_, field)| field))
            .collect();
        path.reverse();
        let field = path.join(".");
        let what = what.first().copied().unwrap_or("not a valid message");
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation(field.clone(), format!("is not a valid value of its type: {what}"));
        details.set_error_info("INVALID_ARGUMENT", "orgadmin", std::collections::HashMap::new());
        Status::with_error_details(
            Code::InvalidArgument,
            format!("the request is not a valid message: {field}: {what}"),
            details,
        )
    }
}
