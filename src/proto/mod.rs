//! The generated protobuf modules for Envoy's RLS v3 API.
//!
//! Package paths mirror the protobuf packages, so generated code that refers
//! to `super::super::...` resolves exactly as in Envoy's API tree.
//! `google.protobuf.Struct` is [`encoded_struct::EncodedStruct`] (build.rs's
//! `extern_path`); the other well-known types are `prost_types`'.

#![allow(clippy::all, missing_docs, rustdoc::all)]

pub mod convert;
pub mod encoded_struct;

pub mod envoy {
    pub mod service {
        /// The aggregated discovery service (state of the world), for the
        /// xDS rule source.
        pub mod discovery {
            pub mod v3 {
                tonic::include_proto!("envoy.service.discovery.v3");
            }
        }
        pub mod ratelimit {
            pub mod v3 {
                tonic::include_proto!("envoy.service.ratelimit.v3");
            }
        }
    }
    pub mod extensions {
        pub mod common {
            pub mod ratelimit {
                pub mod v3 {
                    tonic::include_proto!("envoy.extensions.common.ratelimit.v3");
                }
            }
        }
    }
    pub mod r#type {
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
}

/// `google.rpc.Status`, a NACK's `error_detail`.
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// The reference server's xDS resource: one domain's rules.
pub mod ratelimit {
    pub mod config {
        pub mod ratelimit {
            pub mod v3 {
                tonic::include_proto!("ratelimit.config.ratelimit.v3");
            }
        }
    }
}

/// The encoded `FileDescriptorSet` of the RLS protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rls_descriptor");

pub use envoy::extensions::common::ratelimit::v3::{
    RateLimitDescriptor, rate_limit_descriptor::Entry, rate_limit_descriptor::RateLimitOverride,
};
pub use envoy::service::ratelimit::v3::{
    RateLimitRequest, RateLimitResponse,
    rate_limit_response::{Code, DescriptorStatus, RateLimit, rate_limit::Unit as ResponseUnit},
    rate_limit_service_client::RateLimitServiceClient,
    rate_limit_service_server::{RateLimitService, RateLimitServiceServer},
};
