//! Reading what Lambda hands a function, as `aws_lambda_events` reads it.

use serde::{Deserialize, Deserializer};

/// A `null` where an object may be, read as its absence: Lambda's events and events made by
/// hand carry `"attributes": null` or `"NewImage": null`, which `aws_lambda_events` reads so.
pub fn absent_if_null<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}
