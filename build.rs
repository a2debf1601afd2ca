//! Compiles Envoy's RLS v3 protobufs in `proto/` with tonic/prost, and
//! apart from them (so that gRPC reflection lists only what floodgate
//! serves) the xDS client's: the aggregated discovery service and the
//! reference's `RateLimitConfig` resource.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate, so a machine needs no
//! system protobuf compiler; its bundled include directory supplies the
//! `google/protobuf/*.proto` well-known types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // Edition 2024 makes set_var unsafe; build scripts run single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The response's metadata is written straight into its encoding.
        .extern_path(
            ".google.protobuf.Struct",
            "crate::proto::encoded_struct::EncodedStruct",
        )
        .file_descriptor_set_path(out_dir.join("rls_descriptor.bin"))
        .compile_protos(
            &[std::path::PathBuf::from(
                "proto/envoy/service/ratelimit/v3/rls.proto",
            )],
            &[std::path::PathBuf::from("proto"), include.clone()],
        )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(
            ".google.protobuf.Struct",
            "crate::proto::encoded_struct::EncodedStruct",
        )
        .extern_path(
            ".envoy.config.core.v3",
            "crate::proto::envoy::config::core::v3",
        )
        .compile_protos(
            &[
                std::path::PathBuf::from("proto/envoy/service/discovery/v3/ads.proto"),
                std::path::PathBuf::from("proto/ratelimit/config/ratelimit/v3/rls_conf.proto"),
            ],
            &[std::path::PathBuf::from("proto"), include.clone()],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
