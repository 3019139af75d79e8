//! Compiles the example services' `.proto` files with protox (a pure-Rust protobuf compiler), so
//! building needs no `protoc` on the machine, and generates tonic clients and servers from them
//! exactly as an application would.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/echo.proto", "proto/bookinfo.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
