//! The AWS regions a customer's CloudWatch Logs may be in, by partition. A name of the right
//! shape that is no region (`zz-evil-9`) would send the client to a host that does not resolve,
//! which looks like an outage; it is refused at the door instead.
//!
//! Source: the partitions document (`partitions.json`, version 1.1) that aws-sdk-sts 1.97.0
//! embeds in `endpoint_lib.rs`, read on 2026-11-30. Partitions whose role ARNs the service does
//! not accept (the ISO partitions and `aws-eusc`) are left out. A new region is one line here.

/// `(partition, regions)`; the partition is the one in the role ARN (`arn:<partition>:iam::`).
pub const PARTITIONS: [(&str, &[&str]); 3] = [
    (
        "aws",
        &[
            "af-south-1",
            "ap-east-1",
            "ap-east-2",
            "ap-northeast-1",
            "ap-northeast-2",
            "ap-northeast-3",
            "ap-south-1",
            "ap-south-2",
            "ap-southeast-1",
            "ap-southeast-2",
            "ap-southeast-3",
            "ap-southeast-4",
            "ap-southeast-5",
            "ap-southeast-6",
            "ap-southeast-7",
            "ca-central-1",
            "ca-west-1",
            "eu-central-1",
            "eu-central-2",
            "eu-north-1",
            "eu-south-1",
            "eu-south-2",
            "eu-west-1",
            "eu-west-2",
            "eu-west-3",
            "il-central-1",
            "me-central-1",
            "me-south-1",
            "mx-central-1",
            "sa-east-1",
            "us-east-1",
            "us-east-2",
            "us-west-1",
            "us-west-2",
        ],
    ),
    ("aws-cn", &["cn-north-1", "cn-northwest-1"]),
    ("aws-us-gov", &["us-gov-east-1", "us-gov-west-1"]),
];

/// The partition `region` is in.
pub fn partition_of(region: &str) -> Option<&'static str> {
    PARTITIONS
        .iter()
        .find(|(_, regions)| regions.contains(&region))
        .map(|(partition, _)| *partition)
}

/// Whether `region` is a region of `partition`.
pub fn is_region_of(partition: &str, region: &str) -> bool {
    partition_of(region) == Some(partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_the_sdks_partitions_document_of_2026_11_30() {
        // aws-sdk-sts 1.97.0, endpoint_lib.rs, partitions.json version 1.1: 34 regions in `aws`
        // (its `aws-global` pseudo-region aside), 2 in `aws-cn`, 2 in `aws-us-gov`.
        let counts: Vec<(&str, usize)> = PARTITIONS.iter().map(|(p, r)| (*p, r.len())).collect();
        assert_eq!(counts, [("aws", 34), ("aws-cn", 2), ("aws-us-gov", 2)]);
        for (partition, regions) in PARTITIONS {
            assert!(regions.is_sorted(), "{partition} stays sorted, for review");
            for region in regions {
                // The partition's own `regionRegex`, as the document states it.
                let prefix_ok = match partition {
                    "aws" => ["us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx"]
                        .iter()
                        .any(|p| region.starts_with(&format!("{p}-"))),
                    "aws-cn" => region.starts_with("cn-"),
                    _ => region.starts_with("us-gov-"),
                };
                assert!(prefix_ok, "{region} in {partition}");
            }
        }
    }

    #[test]
    fn regions_are_checked_within_their_partition() {
        assert!(is_region_of("aws", "us-west-2"));
        assert!(is_region_of("aws", "mx-central-1"));
        assert!(is_region_of("aws-cn", "cn-north-1"));
        assert!(is_region_of("aws-us-gov", "us-gov-west-1"));
        assert!(!is_region_of("aws", "zz-evil-9"));
        assert!(!is_region_of("aws", "us-west-9"));
        assert!(!is_region_of("aws", "cn-north-1"));
        assert!(!is_region_of("aws-cn", "us-east-1"));
        assert!(!is_region_of("aws-us-gov", "us-east-1"));
        assert!(!is_region_of("aws-iso", "us-iso-east-1"));
    }
}
