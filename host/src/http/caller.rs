//! Who an HTTP request is from: its `Authorization` header (Basic or Bearer) or the client
//! certificate of its TLS connection, checked once per request by a middleware that hands the
//! handlers a [`Caller`] (a refusal answers before any handler runs).

use super::error::ApiError;
use super::Gateway;
use crate::auth::Credentials;
use crate::service::ServiceError;
use crate::tls::TlsListener;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use rustls::pki_types::CertificateDer;

/// The certificate a TLS client presented (leaf), as axum's connection info.
#[derive(Debug, Clone, Default)]
pub struct ClientCertificate(pub Option<CertificateDer<'static>>);

impl Connected<IncomingStream<'_, TlsListener>> for ClientCertificate {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, session) = stream.io().get_ref();
        ClientCertificate(session.peer_certificates().and_then(|c| c.first().cloned()))
    }
}

/// Authenticates the request and passes its [`crate::auth::Caller`] on to the handler.
pub(super) async fn authenticate(
    State(g): State<Gateway>,
    mut req: Request,
    next: Next,
) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let certificate_names = match req.extensions().get::<ConnectInfo<ClientCertificate>>() {
        Some(ConnectInfo(ClientCertificate(Some(cert)))) if g.auth.enabled() => {
            crate::auth::certificate_names(cert)
        }
        _ => Vec::new(),
    };
    let credentials = Credentials {
        authorization: authorization.as_deref(),
        certificate_names,
        ..Default::default()
    };
    match g.auth.authenticate(credentials).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => ApiError::from(ServiceError::from(e)).into_response(),
    }
}
