//! An RFC 6960 OCSP responder (R-CERT-5, beyond a CRL): a relying party asks
//! about one or more certificates and gets good, revoked (with time and
//! reason) or unknown, signed by the CA itself. Request and response are the
//! `x509-ocsp` types, encoded by the `der` crate; the status comes from the
//! inventory at the moment of the request, so a revocation shows at once.

use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString};
use der::{Any, Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::CrlReason;
use x509_ocsp::{
    BasicOcspResponse, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse, ResponderId, ResponseData,
    RevokedInfo, SingleResponse, Version,
};

use super::{CertificateStatus, RevocationReason};
use crate::Domain;
use crate::ca::CertificateAuthority;
use crate::model::{Millis, now_millis};

/// A response says the status holds for this long (nextUpdate).
const VALID_FOR_MS: Millis = 60 * 60 * 1000;
/// Certificates asked about in one request, at most.
const MAX_REQUESTS: usize = 100;

const SHA1: &str = "1.3.14.3.2.26";
const SHA256: &str = "2.16.840.1.101.3.4.2.1";

fn digest(algorithm: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    let algorithm = match algorithm.to_string().as_str() {
        SHA1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        SHA256 => &ring::digest::SHA256,
        _ => return None,
    };
    Some(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

fn time(at: Millis) -> Result<OcspGeneralizedTime, der::Error> {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.max(0) as u64);
    Ok(OcspGeneralizedTime(GeneralizedTime::from_system_time(at)?))
}

fn crl_reason(reason: RevocationReason) -> CrlReason {
    match reason.rfc5280() {
        rcgen::RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
        rcgen::RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
        rcgen::RevocationReason::Superseded => CrlReason::Superseded,
        rcgen::RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
        _ => CrlReason::Unspecified,
    }
}

/// The serial of a CertID in the stored form (lower-case hex, no leading
/// zeros), or `None` when the CertID names another issuer.
fn our_serial(ca: &CertificateAuthority, id: &x509_ocsp::CertId) -> Option<String> {
    let algorithm = &id.hash_algorithm.oid;
    let name = digest(algorithm, ca.subject_der())?;
    let key = digest(algorithm, ca.public_key_bits())?;
    if id.issuer_name_hash.as_bytes() != name.as_slice() || id.issuer_key_hash.as_bytes() != key.as_slice() {
        return None;
    }
    let digits = hex::encode(id.serial_number.as_bytes());
    let digits = digits.trim_start_matches('0');
    Some(if digits.is_empty() { "0".into() } else { digits.into() })
}

impl Domain {
    /// Answers a DER OCSP request with a DER OCSP response; never fails:
    /// a request that cannot be read gets `malformedRequest`, a database or
    /// signing problem `internalError` or `tryLater`.
    pub async fn ocsp_response(&self, request_der: &[u8]) -> Vec<u8> {
        let refusal = |response: OcspResponse| response.to_der().unwrap_or_default();
        let Some(ca) = self.ca.as_deref() else {
            return refusal(OcspResponse::unauthorized());
        };
        let Ok(request) = OcspRequest::from_der(request_der) else {
            return refusal(OcspResponse::malformed_request());
        };
        let asked = &request.tbs_request.request_list;
        if asked.is_empty() || asked.len() > MAX_REQUESTS {
            return refusal(OcspResponse::malformed_request());
        }
        let now = now_millis();
        let mut responses = Vec::with_capacity(asked.len());
        for one in asked {
            let status = match our_serial(ca, &one.req_cert) {
                None => CertificateStatus::Unknown,
                Some(serial) => match self.certificate_status(&serial).await {
                    Ok(status) => status,
                    Err(e) => {
                        tracing::warn!(error = %e, "OCSP: cannot read a certificate's status");
                        return refusal(OcspResponse::try_later());
                    }
                },
            };
            responses.push((one.req_cert.clone(), status));
        }
        match sign_response(ca, responses, request.nonce(), now) {
            Ok(der) => der,
            Err(e) => {
                tracing::error!(error = %e, "OCSP: cannot build a response");
                refusal(OcspResponse::internal_error())
            }
        }
    }
}

fn sign_response(
    ca: &CertificateAuthority,
    statuses: Vec<(x509_ocsp::CertId, CertificateStatus)>,
    nonce: Option<x509_ocsp::ext::Nonce>,
    now: Millis,
) -> Result<Vec<u8>, String> {
    let err = |e: der::Error| e.to_string();
    let mut responses = Vec::with_capacity(statuses.len());
    for (cert_id, status) in statuses {
        let cert_status = match status {
            CertificateStatus::Good => CertStatus::good(),
            CertificateStatus::Unknown => CertStatus::unknown(),
            CertificateStatus::Revoked { at, reason } => CertStatus::Revoked(RevokedInfo {
                revocation_time: time(at).map_err(err)?,
                revocation_reason: Some(crl_reason(reason)),
            }),
        };
        responses.push(SingleResponse {
            cert_id,
            cert_status,
            this_update: time(now).map_err(err)?,
            next_update: Some(time(now + VALID_FOR_MS).map_err(err)?),
            single_extensions: None,
        });
    }
    let key_hash = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, ca.public_key_bits());
    let response_extensions = match nonce {
        // The client's nonce back, so it knows the answer is fresh.
        Some(nonce) => {
            use x509_cert::ext::AsExtension;
            Some(vec![
                nonce
                    .to_extension(&x509_cert::name::Name::default(), &[])
                    .map_err(err)?,
            ])
        }
        None => None,
    };
    let data = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(OctetString::new(key_hash.as_ref()).map_err(err)?),
        produced_at: time(now).map_err(err)?,
        responses,
        response_extensions,
    };
    let tbs = data.to_der().map_err(err)?;
    let (signature, oid, null_parameters) = ca.sign(&tbs)?;
    let basic = BasicOcspResponse {
        tbs_response_data: data,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new(oid).map_err(|e| e.to_string())?,
            parameters: null_parameters.then(|| Any::from(Null)),
        },
        signature: BitString::from_bytes(&signature).map_err(err)?,
        certs: None,
    };
    OcspResponse::successful(basic).map_err(err)?.to_der().map_err(err)
}
