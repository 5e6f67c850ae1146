//! The api function: built with the workspace; its capability arrives with its own issue.
