//! The xDS client: ADS state of the world over tonic, feeding complete snapshots to a mesh.

pub mod state;
