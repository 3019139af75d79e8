//! A request's path replaced by its normalized form (see [`mesh_core::path`]), shared by the
//! server stack (before authorization) and the route layer (before route matching), so that
//! what is judged or matched is what the next hop receives.

use std::borrow::Cow;

use http::{Request, Uri, uri::PathAndQuery};
use mesh_core::PathNormalizer;

/// Normalizes `req`'s path in place with `normalizer`, keeping the query as received; a clean
/// path is only scanned. `Err` says why the path is refused (the caller answers 400 /
/// `INVALID_ARGUMENT`).
pub(crate) fn normalize_path<B>(
    req: &mut Request<B>,
    normalizer: &PathNormalizer,
) -> Result<(), String> {
    let normalized = match normalizer.normalize(req.uri().path()) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(path)) => path,
        Err(e) => return Err(e.to_string()),
    };
    let uri = std::mem::take(req.uri_mut());
    *req.uri_mut() = with_path(uri, normalized)?;
    Ok(())
}

/// `uri` with its path replaced by `path`, its query kept.
fn with_path(uri: Uri, path: String) -> Result<Uri, String> {
    let mut parts = uri.into_parts();
    let query = parts.path_and_query.as_ref().and_then(PathAndQuery::query);
    let path_and_query = match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    // The normalized path only holds bytes the parser accepted before, so this cannot fail;
    // should it, the request is refused rather than sent on unnormalized.
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query)
            .map_err(|_| "normalized path is not a valid uri path".to_owned())?,
    );
    Uri::from_parts(parts).map_err(|_| "normalized path is not a valid uri".to_owned())
}
