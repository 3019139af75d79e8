//! What the balancer tells the other layers about the endpoints a request went to.

use mesh_core::EndpointAddress;

/// The endpoints earlier attempts of a request went to; the balancer avoids them when it can.
#[derive(Clone, Debug, Default)]
pub(crate) struct TriedEndpoints(pub(crate) Vec<EndpointAddress>);

/// The endpoint that served (or failed) a response, in its extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamAddress(pub EndpointAddress);
