//! Upstream TLS: certificate-provider fields as istiod versions send them, refusing what would weaken TLS, and file certificates.

use super::*;

#[test]
fn istiod_1_29_current_and_deprecated_provider_fields_are_one_source() {
    let old = Cluster {
        transport_socket: tls_socket(&istiod_tls()),
        ..eds(ISTIO_NAME)
    };
    let new = Cluster {
        transport_socket: tls_socket(&istiod_1_29_tls()),
        ..eds(ISTIO_NAME)
    };
    let new = decode(&new);
    assert!(new.unsupported.is_empty(), "{:?}", new.unsupported);
    assert_eq!(new.value, decode(&old).value);

    // Only the current fields, as istiod will send once the deprecated ones are dropped.
    let mut current_only = istiod_1_29_tls();
    if let Some(common) = current_only.common_tls_context.as_mut() {
        common.tls_certificate_certificate_provider_instance = None;
        if let Some(ValidationContextType::CombinedValidationContext(comb)) =
            common.validation_context_type.as_mut()
        {
            comb.validation_context_certificate_provider_instance = None;
        }
    }
    let current_only = Cluster {
        transport_socket: tls_socket(&current_only),
        ..eds(ISTIO_NAME)
    };
    assert_eq!(decode(&current_only).value, decode(&old).value);
}

#[test]
fn disagreeing_provider_fields_are_an_error() {
    let mut identity = istiod_1_29_tls();
    if let Some(common) = identity.common_tls_context.as_mut() {
        common.tls_certificate_provider_instance = plugin_instance("other");
    }
    let c = Cluster {
        transport_socket: tls_socket(&identity),
        ..eds(ISTIO_NAME)
    };
    assert_eq!(
        error_field(&c),
        "transport_socket.typed_config.common_tls_context"
    );

    let mut trust = istiod_1_29_tls();
    if let Some(common) = trust.common_tls_context.as_mut()
        && let Some(ValidationContextType::CombinedValidationContext(comb)) =
            common.validation_context_type.as_mut()
        && let Some(cvc) = comb.default_validation_context.as_mut()
    {
        cvc.ca_certificate_provider_instance = Some(CertificateProviderPluginInstance {
            instance_name: "spire".into(),
            certificate_name: "ROOTCA".into(),
        });
    }
    let c = Cluster {
        transport_socket: tls_socket(&trust),
        ..eds(ISTIO_NAME)
    };
    assert_eq!(
        error_field(&c),
        "transport_socket.typed_config.common_tls_context.combined_validation_context"
    );

    // A file CA beside a provider instance is still two sources.
    let mut file_and_provider = istiod_tls();
    if let Some(common) = file_and_provider.common_tls_context.as_mut()
        && let Some(ValidationContextType::CombinedValidationContext(comb)) =
            common.validation_context_type.as_mut()
        && let Some(cvc) = comb.default_validation_context.as_mut()
    {
        cvc.trusted_ca = Some(file("/etc/certs/root-cert.pem"));
    }
    let c = Cluster {
        transport_socket: tls_socket(&file_and_provider),
        ..eds(ISTIO_NAME)
    };
    assert_eq!(
        error_field(&c),
        "transport_socket.typed_config.common_tls_context.combined_validation_context"
    );
}

#[test]
fn weakening_tls_is_an_error() {
    let mut untrusted = istiod_tls();
    if let Some(ValidationContextType::CombinedValidationContext(comb)) = untrusted
        .common_tls_context
        .as_mut()
        .and_then(|c| c.validation_context_type.as_mut())
        && let Some(cvc) = comb.default_validation_context.as_mut()
    {
        cvc.trust_chain_verification = TrustChainVerification::AcceptUntrusted as i32;
    }
    let c = Cluster {
        transport_socket: tls_socket(&untrusted),
        ..eds("reviews")
    };
    assert_eq!(
        error_field(&c),
        "transport_socket.typed_config.common_tls_context.combined_validation_context.default_validation_context.trust_chain_verification"
    );

    // No trust source at all.
    let c = Cluster {
        transport_socket: tls_socket(&UpstreamTlsContext {
            sni: "reviews".into(),
            common_tls_context: Some(CommonTlsContext::default()),
            ..Default::default()
        }),
        ..eds("reviews")
    };
    assert_eq!(
        error_field(&c),
        "transport_socket.typed_config.common_tls_context.validation_context"
    );

    // An inline private key.
    let mut inline_key = istiod_tls();
    if let Some(common) = inline_key.common_tls_context.as_mut() {
        common.tls_certificate_certificate_provider_instance = None;
        common.tls_certificates = vec![TlsCertificate {
            certificate_chain: Some(file("/etc/certs/cert.pem")),
            private_key: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString("-----BEGIN".into())),
                watched_directory: None,
            }),
            ..Default::default()
        }];
    }
    let c = Cluster {
        transport_socket: tls_socket(&inline_key),
        ..eds("reviews")
    };
    assert_eq!(
        error_field(&c),
        "transport_socket.typed_config.common_tls_context.tls_certificates[0].private_key"
    );

    // An unknown transport socket never falls back to plaintext.
    let c = Cluster {
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.alts".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts"
                    .into(),
                value: vec![],
            })),
        }),
        ..eds("reviews")
    };
    let e = decode_cluster(&c).unwrap_err();
    assert_eq!(e.field, "transport_socket.typed_config");
    assert!(e.message.contains("plaintext"), "{e}");
}

fn file(name: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(name.into())),
        watched_directory: None,
    }
}

#[test]
fn file_certificates_make_mutual_tls() {
    let tls = UpstreamTlsContext {
        sni: "reviews.example.com".into(),
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: Some(file("/certs/cert.pem")),
                private_key: Some(file("/certs/key.pem")),
                ..Default::default()
            }],
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(file("/certs/ca.pem")),
                    match_subject_alt_names: vec![PbStringMatcher {
                        match_pattern: Some(MatchPattern::Suffix(".example.com".into())),
                        ignore_case: true,
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = Cluster {
        transport_socket: tls_socket(&tls),
        ..eds("reviews")
    };
    let t = decode(&c).value.cluster.tls;
    assert_eq!(t.mode, TlsMode::Mutual);
    assert_eq!(t.sni.as_deref(), Some("reviews.example.com"));
    assert_eq!(
        t.client_certificate,
        Some(CertificateSource::Files {
            certificate: "/certs/cert.pem".into(),
            private_key: Some("/certs/key.pem".into()),
        })
    );
    assert_eq!(
        t.trust_bundle,
        Some(CertificateSource::Files {
            certificate: "/certs/ca.pem".into(),
            private_key: None,
        })
    );
    // Envoy's untyped SAN matcher applies to every SAN type.
    let kinds: Vec<SanKind> = t.san_matchers.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            SanKind::Dns,
            SanKind::Uri,
            SanKind::Email,
            SanKind::IpAddress
        ]
    );
}
