//! Logging: `defmt` when the feature is on, nothing otherwise.

#[cfg(feature = "defmt")]
macro_rules! dlog {
    ($($arg:tt)*) => { defmt::debug!($($arg)*) };
}

#[cfg(not(feature = "defmt"))]
macro_rules! dlog {
    ($($arg:tt)*) => {{}};
}
