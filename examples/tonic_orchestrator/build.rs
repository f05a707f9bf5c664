//! Generates the gRPC code with the protoc that `protoc-bin-vendored` ships,
//! so building this example needs no protoc on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/orchestrator.proto"],
        &["proto"],
    )?;
    Ok(())
}
