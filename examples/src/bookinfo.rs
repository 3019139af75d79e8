//! A small bookinfo, written as an application would write it: the product page (axum, HTTP)
//! calls `reviews` (gRPC), whose v2 and v3 call `ratings` (gRPC). Every outgoing call goes
//! through a mesh channel; nothing here knows about routing, retries, TLS or tracing — the
//! mesh does that around these handlers.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};
use mesh_tower::Channel;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::echo::Knobs;
use crate::proto::bookinfo::{
    Rating, RatingsReply, RatingsRequest, Review, ReviewsReply, ReviewsRequest,
    ratings_client::RatingsClient, ratings_server, reviews_client::ReviewsClient, reviews_server,
};

/// The `reviews` target of the mesh.
pub const REVIEWS: &str = "reviews.default.svc.cluster.local:9080";
/// The `ratings` target of the mesh.
pub const RATINGS: &str = "ratings.default.svc.cluster.local:9080";

const REVIEWERS: [(&str, &str, u32); 2] = [
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare.",
        5,
    ),
    ("Reviewer2", "Absolutely fun and entertaining.", 4),
];

/// `ratings`: the stars of each review.
#[derive(Clone, Debug)]
pub struct RatingsService {
    instance: Arc<str>,
    knobs: Arc<Knobs>,
}

impl RatingsService {
    /// The instance listening on `address`, failing and slowing down as `knobs` say.
    pub fn new(address: SocketAddr, knobs: Arc<Knobs>) -> Self {
        Self {
            instance: address.to_string().into(),
            knobs,
        }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> ratings_server::RatingsServer<Self> {
        ratings_server::RatingsServer::new(self)
    }
}

#[tonic::async_trait]
impl ratings_server::Ratings for RatingsService {
    async fn get_ratings(
        &self,
        request: Request<RatingsRequest>,
    ) -> Result<Response<RatingsReply>, Status> {
        self.knobs.apply("ratings").await?;
        let trace_id = crate::trace_id(request.metadata().as_ref()).unwrap_or_default();
        let caller_principal = crate::caller_principal(&request);
        Ok(Response::new(RatingsReply {
            ratings: REVIEWERS
                .iter()
                .map(|(reviewer, _, stars)| Rating {
                    reviewer: (*reviewer).into(),
                    stars: *stars,
                })
                .collect(),
            trace_id,
            instance: self.instance.to_string(),
            caller_principal,
        }))
    }
}

/// `reviews`: v1 shows no stars; v2 and v3 ask `ratings` for them.
#[derive(Clone, Debug)]
pub struct ReviewsService {
    version: String,
    ratings: Option<RatingsClient<Channel>>,
    knobs: Arc<Knobs>,
}

impl ReviewsService {
    /// Reviews at `version`; `ratings` is the mesh channel to ratings (ignored by v1); `knobs`
    /// make it fail or slow down.
    pub fn new(version: &str, ratings: Channel, knobs: Arc<Knobs>) -> Self {
        Self {
            version: version.into(),
            ratings: (version != "v1").then(|| RatingsClient::new(ratings)),
            knobs,
        }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> reviews_server::ReviewsServer<Self> {
        reviews_server::ReviewsServer::new(self)
    }
}

#[tonic::async_trait]
impl reviews_server::Reviews for ReviewsService {
    async fn get_reviews(
        &self,
        request: Request<ReviewsRequest>,
    ) -> Result<Response<ReviewsReply>, Status> {
        self.knobs
            .apply(&format!("reviews {}", self.version))
            .await?;
        let trace_id = crate::trace_id(request.metadata().as_ref()).unwrap_or_default();
        let product_id = request.into_inner().product_id;
        let mut reply = ReviewsReply {
            version: self.version.clone(),
            reviews: REVIEWERS
                .iter()
                .map(|(reviewer, text, _)| Review {
                    reviewer: (*reviewer).into(),
                    text: (*text).into(),
                    stars: 0,
                })
                .collect(),
            ratings_error: String::new(),
            trace_id,
            ratings_trace_id: String::new(),
        };
        if let Some(ratings) = &self.ratings {
            // The trace continues into this call without copying headers: the mesh's server
            // layer made this request's trace current, and the channel injects it.
            match ratings
                .clone()
                .get_ratings(RatingsRequest { product_id })
                .await
            {
                Ok(r) => {
                    reply.ratings_trace_id.clone_from(&r.get_ref().trace_id);
                    for (review, rating) in reply.reviews.iter_mut().zip(&r.get_ref().ratings) {
                        review.stars = rating.stars;
                    }
                }
                Err(status) => reply.ratings_error = format!("ratings unavailable: {status}"),
            }
        }
        Ok(Response::new(reply))
    }
}

/// What the product page answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProductPage {
    /// The product.
    pub product_id: u32,
    /// Which reviews version answered, empty when reviews failed.
    pub reviews_version: String,
    /// The reviews, with stars when the version shows them.
    pub reviews: Vec<(String, String, u32)>,
    /// Why reviews or ratings are missing, when they are.
    pub error: String,
    /// The trace id each hop saw: product page, reviews, and ratings when reviews called it.
    pub trace_ids: Vec<String>,
}

/// The product page: an axum router calling `reviews` through `reviews` (a mesh channel).
pub fn product_page(reviews: Channel) -> Router {
    Router::new()
        .route("/productpage/{id}", get(page))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(ReviewsClient::new(reviews))
}

async fn page(
    State(reviews): State<ReviewsClient<Channel>>,
    Path(product_id): Path<u32>,
    headers: HeaderMap,
) -> (StatusCode, Json<ProductPage>) {
    let mut page = ProductPage {
        product_id,
        reviews_version: String::new(),
        reviews: Vec::new(),
        error: String::new(),
        trace_ids: vec![crate::trace_id(&headers).unwrap_or_default()],
    };
    match reviews
        .clone()
        .get_reviews(ReviewsRequest { product_id })
        .await
    {
        Ok(reply) => {
            let reply = reply.into_inner();
            page.reviews_version = reply.version;
            page.reviews = reply
                .reviews
                .into_iter()
                .map(|r| (r.reviewer, r.text, r.stars))
                .collect();
            page.error = reply.ratings_error;
            page.trace_ids.push(reply.trace_id);
            if !reply.ratings_trace_id.is_empty() {
                page.trace_ids.push(reply.ratings_trace_id);
            }
            (StatusCode::OK, Json(page))
        }
        Err(status) => {
            page.error = format!("reviews unavailable: {status}");
            (StatusCode::SERVICE_UNAVAILABLE, Json(page))
        }
    }
}
