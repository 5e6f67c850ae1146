//! The event's fields that take one of a fixed set of names. The names are derived (strum)
//! from one attribute per value, for parsing, printing and the error that lists them.

use super::EventError;
use strum::{Display, EnumIter, EnumString, IntoStaticStr, VariantNames};

/// A field whose value is one of a fixed set of names.
pub(super) trait OneOf: std::str::FromStr + VariantNames {
    /// The field, as the error names it.
    const FIELD: &'static str;

    /// The value a producer wrote; the error lists what is allowed, never what was sent.
    fn parse_field(s: &str) -> Result<Self, EventError> {
        s.parse().map_err(|_| EventError::NotAllowed {
            field: Self::FIELD,
            allowed: Self::VARIANTS,
        })
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumString,
    IntoStaticStr,
    Display,
    VariantNames,
    EnumIter,
)]
pub enum Status {
    #[strum(serialize = "OK")]
    Ok,
    #[strum(serialize = "FAILED")]
    Failed,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumString,
    IntoStaticStr,
    Display,
    VariantNames,
    EnumIter,
)]
#[strum(serialize_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
    Read,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumString,
    IntoStaticStr,
    Display,
    VariantNames,
    EnumIter,
)]
pub enum ActorType {
    #[strum(serialize = "TYPE_UNSET")]
    Unset,
    #[strum(serialize = "TYPE_USER")]
    User,
    #[strum(serialize = "TYPE_SERVICE")]
    Service,
    #[strum(serialize = "TYPE_INTERNAL_OPERATOR")]
    InternalOperator,
    #[strum(serialize = "TYPE_ANONYMOUS")]
    Anonymous,
}

impl OneOf for Status {
    const FIELD: &'static str = "status";
}

impl OneOf for Action {
    const FIELD: &'static str = "action";
}

impl OneOf for ActorType {
    const FIELD: &'static str = "actor.type";
}

impl Status {
    /// The wire name, as producers write it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Action {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl ActorType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
