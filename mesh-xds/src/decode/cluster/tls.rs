//! The cluster's `transport_socket`: plaintext, or an `UpstreamTlsContext` decoded into
//! [`UpstreamTls`].
//!
//! # Security
//!
//! Nothing that would make verification weaker is ever ignored: a TLS context without a trust
//! source, `ACCEPT_UNTRUSTED`, expired certificates, certificate pinning or CRLs the mesh
//! cannot check, SDS or inline secrets it cannot load, an unknown transport socket — each is an
//! error, so the resource is NACKed and the last good cluster stays. An unknown socket never
//! falls back to plaintext.
//!
//! # Mapping
//!
//! - The `CommonTlsContext` is decoded by [`decode_common_tls_context`], which the listener's
//!   `DownstreamTlsContext` shares.
//! - Client certificate present → [`TlsMode::Mutual`], else [`TlsMode::Simple`].
//! - Certificate-provider instances (gRPC's proxyless style: istiod sends instance `default`,
//!   certificate `default` for the workload certificate and `ROOTCA` for the trust bundle) map
//!   to [`CertificateSource::Provider`] with `Mutual`, *not* `IstioMutual`: the resource names
//!   the bootstrap's provider instances explicitly, and keeping those names means the data plane
//!   loads exactly what the control plane asked for instead of assuming the mesh identity.
//! - File data sources map to [`CertificateSource::Files`]; inline bytes and environment
//!   variables are rejected (the model only watches files).
//! - Envoy's untyped `match_subject_alt_names` matches any SAN type. An exact `spiffe://` value
//!   can only be a URI SAN, so it becomes one URI matcher; any other matcher becomes one matcher
//!   per SAN type (DNS, URI, email, IP), which is exactly Envoy's any-of semantics.

// Deprecated fields are read on purpose: control planes still send them (istiod's proxyless
// TLS uses the deprecated certificate-provider-instance fields), and a set field must be
// decoded or reported, never skipped.
#![allow(deprecated)]

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::Cluster,
        core::v3::{DataSource, data_source, transport_socket},
    },
    extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, CommonTlsContext, UpstreamTlsContext,
        certificate_validation_context::TrustChainVerification, common_tls_context,
        subject_alt_name_matcher::SanType,
    },
    r#type::matcher::v3::{StringMatcher as PbStringMatcher, string_matcher::MatchPattern},
};
use mesh_core::{
    CertificateSource, SanKind, SanMatcher, TlsMode, UpstreamTls,
    matcher::{Regex, StringMatch, StringMatcher},
};

use super::super::{Ctx, DecodeError, fields};

/// The conventional name of the plaintext transport socket.
const RAW_BUFFER_NAME: &str = "envoy.transport_sockets.raw_buffer";
/// The type URL of the plaintext transport socket's configuration.
const RAW_BUFFER_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
/// The certificate-provider instance used when a resource leaves the name empty.
const DEFAULT_INSTANCE: &str = "default";

/// TLS to the cluster's endpoints; plaintext when no transport socket is set (Envoy's default).
pub(super) fn transport_socket(ctx: &mut Ctx, c: &Cluster) -> Result<UpstreamTls, DecodeError> {
    if !c.transport_socket_matches.is_empty() {
        return Err(ctx.error(
            "transport_socket_matches",
            "not supported: endpoints could get another transport socket than the one configured",
        ));
    }
    if c.transport_socket_matcher.is_some() {
        return Err(ctx.error("transport_socket_matcher", "not supported"));
    }
    let Some(ts) = &c.transport_socket else {
        return Ok(UpstreamTls::default());
    };
    let path = "transport_socket.typed_config";
    let any = match &ts.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => any,
        None if ts.name == RAW_BUFFER_NAME => return Ok(UpstreamTls::default()),
        None => {
            return Err(ctx.error(
                path,
                format!(
                    "transport socket `{}` needs a typed_config; refusing plaintext",
                    ts.name
                ),
            ));
        }
    };
    if any.type_url == <UpstreamTlsContext as prost::Name>::type_url() {
        let tls: UpstreamTlsContext = fields::unpack(ctx, path, any)?;
        upstream_tls(ctx, path, &tls)
    } else if any.type_url == RAW_BUFFER_URL {
        Ok(UpstreamTls::default())
    } else {
        Err(ctx.error(
            path,
            format!(
                "transport socket type `{}` is not supported; refusing to fall back to plaintext",
                any.type_url
            ),
        ))
    }
}

/// An `UpstreamTlsContext`.
fn upstream_tls(
    ctx: &mut Ctx,
    path: &str,
    t: &UpstreamTlsContext,
) -> Result<UpstreamTls, DecodeError> {
    if t.auto_sni_san_validation {
        return Err(ctx.error(
            format!("{path}.auto_sni_san_validation"),
            "not supported; ignoring it would skip a SAN check",
        ));
    }
    for (set, field) in [
        (t.auto_host_sni, "auto_host_sni"),
        (t.allow_renegotiation, "allow_renegotiation"),
        (t.max_session_keys.is_some(), "max_session_keys"),
        (t.enforce_rsa_key_usage.is_some(), "enforce_rsa_key_usage"),
    ] {
        if set {
            ctx.unsupported(format!("{path}.{field}"), "ignored");
        }
    }
    let cpath = format!("{path}.common_tls_context");
    let Some(common) = &t.common_tls_context else {
        return Err(ctx.error(
            cpath,
            "required: without a trust source the server is not verified",
        ));
    };
    let CommonTls {
        certificate,
        trust,
        san_matchers,
        validation_path,
    } = decode_common_tls_context(ctx, &cpath, common)?;
    let Some(trust) = trust else {
        return Err(ctx.error(
            validation_path,
            "no trust source (trusted_ca or a certificate provider instance): the server would not be verified",
        ));
    };
    Ok(UpstreamTls {
        mode: if certificate.is_some() {
            TlsMode::Mutual
        } else {
            TlsMode::Simple
        },
        sni: (!t.sni.is_empty()).then(|| t.sni.clone()),
        san_matchers: san_matchers.into(),
        client_certificate: certificate,
        trust_bundle: Some(trust),
    })
}

/// What a `CommonTlsContext` configures, the part shared by upstream (cluster) and downstream
/// (listener) TLS. Which of its parts are required is the caller's decision: a client must
/// have a trust source, a server needs one only to verify client certificates.
#[derive(Debug)]
pub(crate) struct CommonTls {
    /// This side's own certificate and key: the client certificate upstream, the server
    /// certificate downstream.
    pub(crate) certificate: Option<CertificateSource>,
    /// The CA bundle that verifies the peer.
    pub(crate) trust: Option<CertificateSource>,
    /// The peer's accepted SANs (any-of); empty accepts any SAN the trust source verifies.
    pub(crate) san_matchers: Vec<SanMatcher>,
    /// The field path of the validation context, where a missing trust source is reported.
    pub(crate) validation_path: String,
}

/// Decodes a `CommonTlsContext` found at field path `cpath`, for `UpstreamTlsContext` and
/// `DownstreamTlsContext` alike.
///
/// A field that would weaken verification is an error. istiod ≥ 1.29 (istio#58257) sets both
/// the current and the deprecated certificate-provider field for the identity
/// (`tls_certificate_provider_instance` and `tls_certificate_certificate_provider_instance`)
/// and for the trust bundle (`default_validation_context.ca_certificate_provider_instance` and
/// `combined_validation_context.validation_context_certificate_provider_instance`), for old and
/// new gRPC clients: as in gRPC C-core and grpc-js, two fields naming the same instance and
/// certificate are one source; two that disagree are an error.
pub(crate) fn decode_common_tls_context(
    ctx: &mut Ctx,
    cpath: &str,
    common: &CommonTlsContext,
) -> Result<CommonTls, DecodeError> {
    let certificate = own_certificate(ctx, cpath, common)?;
    let (validation_path, trust, san_matchers) = validation(ctx, cpath, common)?;
    for (set, field) in [
        (common.tls_params.is_some(), "tls_params"),
        (!common.alpn_protocols.is_empty(), "alpn_protocols"),
        (common.key_log.is_some(), "key_log"),
    ] {
        if set {
            ctx.unsupported(format!("{cpath}.{field}"), "ignored");
        }
    }
    if common.custom_handshaker.is_some() {
        return Err(ctx.error(format!("{cpath}.custom_handshaker"), "not supported"));
    }
    Ok(CommonTls {
        certificate,
        trust,
        san_matchers,
        validation_path,
    })
}

/// This side's certificate, if any; two sources that are not the same are an error.
fn own_certificate(
    ctx: &mut Ctx,
    cpath: &str,
    common: &CommonTlsContext,
) -> Result<Option<CertificateSource>, DecodeError> {
    if !common.tls_certificate_sds_secret_configs.is_empty() {
        return Err(ctx.error(
            format!("{cpath}.tls_certificate_sds_secret_configs"),
            "SDS is not supported",
        ));
    }
    if common.tls_certificate_certificate_provider.is_some() {
        return Err(ctx.error(
            format!("{cpath}.tls_certificate_certificate_provider"),
            "not supported; use a certificate provider instance",
        ));
    }
    if common.custom_tls_certificate_selector.is_some() {
        return Err(ctx.error(
            format!("{cpath}.custom_tls_certificate_selector"),
            "not supported",
        ));
    }
    let mut sources = Vec::new();
    if let Some(first) = common.tls_certificates.first() {
        let tpath = format!("{cpath}.tls_certificates[0]");
        let certificate = match &first.certificate_chain {
            Some(ds) => file(ctx, &format!("{tpath}.certificate_chain"), ds)?,
            None => return Err(ctx.error(format!("{tpath}.certificate_chain"), "required")),
        };
        for (set, field) in [
            (first.pkcs12.is_some(), "pkcs12"),
            (first.private_key_provider.is_some(), "private_key_provider"),
            (first.password.is_some(), "password"),
        ] {
            if set {
                return Err(ctx.error(format!("{tpath}.{field}"), "not supported"));
            }
        }
        let private_key = match &first.private_key {
            Some(ds) => file(ctx, &format!("{tpath}.private_key"), ds)?,
            None => return Err(ctx.error(format!("{tpath}.private_key"), "required")),
        };
        for (set, field) in [
            (first.watched_directory.is_some(), "watched_directory"),
            (first.ocsp_staple.is_some(), "ocsp_staple"),
            (
                !first.signed_certificate_timestamp.is_empty(),
                "signed_certificate_timestamp",
            ),
            (first.tls_params.is_some(), "tls_params"),
        ] {
            if set {
                ctx.unsupported(format!("{tpath}.{field}"), "ignored");
            }
        }
        for i in 1..common.tls_certificates.len() {
            ctx.unsupported(
                format!("{cpath}.tls_certificates[{i}]"),
                "ignored: the first certificate is used",
            );
        }
        sources.push(CertificateSource::Files {
            certificate,
            private_key: Some(private_key),
        });
    }
    if let Some(p) = &common.tls_certificate_provider_instance {
        sources.push(provider(&p.instance_name, &p.certificate_name));
    }
    if let Some(p) = &common.tls_certificate_certificate_provider_instance {
        sources.push(provider(&p.instance_name, &p.certificate_name));
    }
    // istiod ≥ 1.29 names the same instance in the current and the deprecated field.
    sources.dedup();
    match sources.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        [a, b, ..] => Err(ctx.error(
            cpath,
            format!(
                "more than one certificate source: {} and {}",
                describe(a),
                describe(b)
            ),
        )),
    }
}

/// The validation context's field path, its trust source (if any) and SAN matchers.
fn validation(
    ctx: &mut Ctx,
    cpath: &str,
    common: &CommonTlsContext,
) -> Result<(String, Option<CertificateSource>, Vec<SanMatcher>), DecodeError> {
    use common_tls_context::ValidationContextType as V;
    let (path, trust, sans) = match &common.validation_context_type {
        None => (format!("{cpath}.validation_context"), None, Vec::new()),
        Some(V::ValidationContext(cvc)) => {
            let path = format!("{cpath}.validation_context");
            let (trust, sans) = validation_context(ctx, &path, cvc)?;
            (path, trust, sans)
        }
        Some(V::CombinedValidationContext(comb)) => {
            let path = format!("{cpath}.combined_validation_context");
            if comb.validation_context_sds_secret_config.is_some() {
                return Err(ctx.error(
                    format!("{path}.validation_context_sds_secret_config"),
                    "SDS is not supported",
                ));
            }
            if comb.validation_context_certificate_provider.is_some() {
                return Err(ctx.error(
                    format!("{path}.validation_context_certificate_provider"),
                    "not supported; use a certificate provider instance",
                ));
            }
            let (inner, sans) = match &comb.default_validation_context {
                Some(cvc) => {
                    validation_context(ctx, &format!("{path}.default_validation_context"), cvc)?
                }
                None => (None, Vec::new()),
            };
            let instance = comb
                .validation_context_certificate_provider_instance
                .as_ref()
                .map(|p| provider(&p.instance_name, &p.certificate_name));
            let trust = match (inner, instance) {
                // istiod ≥ 1.29 names the same instance in the current and the deprecated field.
                (Some(a), Some(b)) if a != b => {
                    return Err(ctx.error(
                        path,
                        format!(
                            "more than one trust source: {} and {}",
                            describe(&a),
                            describe(&b)
                        ),
                    ));
                }
                (a, b) => a.or(b),
            };
            (path, trust, sans)
        }
        Some(V::ValidationContextCertificateProviderInstance(p)) => (
            format!("{cpath}.validation_context_certificate_provider_instance"),
            Some(provider(&p.instance_name, &p.certificate_name)),
            Vec::new(),
        ),
        Some(V::ValidationContextSdsSecretConfig(_)) => {
            return Err(ctx.error(
                format!("{cpath}.validation_context_sds_secret_config"),
                "SDS is not supported",
            ));
        }
        Some(V::ValidationContextCertificateProvider(_)) => {
            return Err(ctx.error(
                format!("{cpath}.validation_context_certificate_provider"),
                "not supported; use a certificate provider instance",
            ));
        }
    };
    Ok((path, trust, sans))
}

/// A `CertificateValidationContext`: its trust source (if any) and SAN matchers.
fn validation_context(
    ctx: &mut Ctx,
    path: &str,
    cvc: &CertificateValidationContext,
) -> Result<(Option<CertificateSource>, Vec<SanMatcher>), DecodeError> {
    if cvc.trust_chain_verification != TrustChainVerification::VerifyTrustChain as i32 {
        return Err(ctx.error(
            format!("{path}.trust_chain_verification"),
            "only VERIFY_TRUST_CHAIN is allowed: ACCEPT_UNTRUSTED would disable verification",
        ));
    }
    let weakening = [
        (
            cvc.allow_expired_certificate,
            "allow_expired_certificate",
            "would accept expired certificates",
        ),
        (
            !cvc.verify_certificate_spki.is_empty(),
            "verify_certificate_spki",
            "certificate pinning is not supported",
        ),
        (
            !cvc.verify_certificate_hash.is_empty(),
            "verify_certificate_hash",
            "certificate pinning is not supported",
        ),
        (
            cvc.crl.is_some(),
            "crl",
            "revocation lists are not supported",
        ),
        (
            cvc.require_signed_certificate_timestamp
                .is_some_and(|b| b.value),
            "require_signed_certificate_timestamp",
            "not supported",
        ),
        (
            cvc.custom_validator_config.is_some(),
            "custom_validator_config",
            "not supported",
        ),
        (
            cvc.max_verify_depth.is_some(),
            "max_verify_depth",
            "not supported",
        ),
        (
            cvc.system_root_certs.is_some(),
            "system_root_certs",
            "not supported; name a CA file or provider",
        ),
    ];
    for (set, field, why) in weakening {
        if set {
            return Err(ctx.error(format!("{path}.{field}"), why));
        }
    }
    for (set, field) in [
        (cvc.watched_directory.is_some(), "watched_directory"),
        (cvc.only_verify_leaf_cert_crl, "only_verify_leaf_cert_crl"),
        (cvc.suppress_client_ca_list, "suppress_client_ca_list"),
    ] {
        if set {
            ctx.unsupported(format!("{path}.{field}"), "ignored");
        }
    }
    let file_ca = match &cvc.trusted_ca {
        Some(ds) => Some(CertificateSource::Files {
            certificate: file(ctx, &format!("{path}.trusted_ca"), ds)?,
            private_key: None,
        }),
        None => None,
    };
    let instance = cvc
        .ca_certificate_provider_instance
        .as_ref()
        .map(|p| provider(&p.instance_name, &p.certificate_name));
    let trust = match (file_ca, instance) {
        (Some(_), Some(_)) => return Err(ctx.error(path, "more than one trust source")),
        (a, b) => a.or(b),
    };
    let mut sans = Vec::new();
    for (i, m) in cvc.match_typed_subject_alt_names.iter().enumerate() {
        let mpath = format!("{path}.match_typed_subject_alt_names[{i}]");
        let kind = match SanType::try_from(m.san_type) {
            Ok(SanType::Dns) => SanKind::Dns,
            Ok(SanType::Uri) => SanKind::Uri,
            Ok(SanType::Email) => SanKind::Email,
            Ok(SanType::IpAddress) => SanKind::IpAddress,
            _ => {
                return Err(ctx.error(
                    format!("{mpath}.san_type"),
                    "must be DNS, URI, EMAIL or IP_ADDRESS",
                ));
            }
        };
        let Some(matcher) = &m.matcher else {
            return Err(ctx.error(format!("{mpath}.matcher"), "required"));
        };
        let matcher = string_matcher(ctx, &format!("{mpath}.matcher"), matcher)?;
        sans.push(SanMatcher { kind, matcher });
    }
    for (i, m) in cvc.match_subject_alt_names.iter().enumerate() {
        let matcher = string_matcher(ctx, &format!("{path}.match_subject_alt_names[{i}]"), m)?;
        let spiffe = !matcher.ignore_case()
            && matches!(matcher.kind(), StringMatch::Exact(v) if v.starts_with("spiffe://"));
        if spiffe {
            sans.push(SanMatcher {
                kind: SanKind::Uri,
                matcher,
            });
        } else {
            for kind in [
                SanKind::Dns,
                SanKind::Uri,
                SanKind::Email,
                SanKind::IpAddress,
            ] {
                sans.push(SanMatcher {
                    kind,
                    matcher: matcher.clone(),
                });
            }
        }
    }
    Ok((trust, sans))
}

/// Envoy's `StringMatcher`.
fn string_matcher(
    ctx: &Ctx,
    path: &str,
    m: &PbStringMatcher,
) -> Result<StringMatcher, DecodeError> {
    let kind = match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => StringMatch::Exact(s.clone()),
        Some(MatchPattern::Prefix(s)) => StringMatch::Prefix(s.clone()),
        Some(MatchPattern::Suffix(s)) => StringMatch::Suffix(s.clone()),
        Some(MatchPattern::Contains(s)) => StringMatch::Contains(s.clone()),
        Some(MatchPattern::SafeRegex(r)) => StringMatch::Regex(
            Regex::new(&r.regex)
                .map_err(|e| ctx.error(format!("{path}.safe_regex.regex"), e.message()))?,
        ),
        Some(MatchPattern::Custom(_)) => {
            return Err(ctx.error(format!("{path}.custom"), "not supported"));
        }
        None => return Err(ctx.error(path, "a match pattern is required")),
    };
    Ok(StringMatcher::new(kind, m.ignore_case))
}

/// A certificate-provider instance; an empty instance name is Envoy's `default`.
fn provider(instance: &str, certificate_name: &str) -> CertificateSource {
    CertificateSource::Provider {
        instance: if instance.is_empty() {
            DEFAULT_INSTANCE.to_string()
        } else {
            instance.to_string()
        },
        certificate_name: certificate_name.to_string(),
    }
}

/// A certificate source as an error message names it.
fn describe(source: &CertificateSource) -> String {
    match source {
        CertificateSource::Provider {
            instance,
            certificate_name,
        } => format!("provider instance `{instance}` certificate `{certificate_name}`"),
        CertificateSource::Files { certificate, .. } => format!("file `{certificate}`"),
    }
}

/// The file name of a data source; inline data and environment variables are errors.
fn file(ctx: &Ctx, path: &str, ds: &DataSource) -> Result<String, DecodeError> {
    match &ds.specifier {
        Some(data_source::Specifier::Filename(f)) if !f.is_empty() => Ok(f.clone()),
        Some(data_source::Specifier::Filename(_)) | None => {
            Err(ctx.error(format!("{path}.filename"), "required"))
        }
        Some(data_source::Specifier::InlineBytes(_) | data_source::Specifier::InlineString(_)) => {
            Err(ctx.error(
                path,
                "inline certificates and keys are not supported; use a file",
            ))
        }
        Some(data_source::Specifier::EnvironmentVariable(_)) => Err(ctx.error(
            path,
            "environment variable data sources are not supported; use a file",
        )),
    }
}
