//! Nothing: the bench is `benches/vs_iceoryx2.rs`.
