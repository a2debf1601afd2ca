pub mod config;
pub mod limit;
pub mod proto;
pub mod rules;
pub mod store;
