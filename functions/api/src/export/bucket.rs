//! The stack's export bucket: each export's file as one multipart upload, the bytes a step
//! could not yet upload as a part of their own (S3 takes parts of 5 MiB and more, but the last),
//! and the presigned link a download goes through.

use audit_log::streaming::ExportPart;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use std::time::Duration;

/// What went wrong, in S3's words (keys and ids only, never a credential).
fn failed<E>(what: &str) -> impl Fn(E) -> String
where
    E: std::error::Error + 'static,
{
    let what = what.to_owned();
    move |e| format!("S3 {what} failed: {}", DisplayErrorContext(e))
}

#[derive(Debug, Clone)]
pub struct ExportBucket {
    client: aws_sdk_s3::Client,
    name: String,
}

impl ExportBucket {
    pub fn new(aws: &aws_config::SdkConfig, name: &str) -> Self {
        // A local emulator answers on one host: buckets go in the path, not the host name.
        let config = aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(aws.endpoint_url().is_some())
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(config),
            name: name.to_owned(),
        }
    }

    /// Starts the file's upload: its id.
    pub async fn start_upload(&self, key: &str, file_name: &str) -> Result<String, String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .content_type("application/gzip")
            .content_disposition(format!("attachment; filename=\"{file_name}\""))
            .send()
            .await
            .map_err(failed("CreateMultipartUpload"))?;
        out.upload_id
            .ok_or_else(|| "S3 CreateMultipartUpload answered without an upload id".into())
    }

    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        bytes: Vec<u8>,
    ) -> Result<ExportPart, String> {
        let size = bytes.len() as u64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(failed("UploadPart"))?;
        Ok(ExportPart {
            number,
            etag: out.e_tag.unwrap_or_default(),
            bytes: size,
        })
    }

    /// Joins the parts into the file. Done already (an earlier step completed it and died
    /// before saving so): the file is there, and that is enough.
    pub async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[ExportPart],
    ) -> Result<(), String> {
        let parts = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(failed("CompleteMultipartUpload"));
        match completed {
            Ok(_) => Ok(()),
            Err(e) => match self
                .client
                .head_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(_) => Err(e),
            },
        }
    }

    /// Gives up the file's upload (S3 frees its parts).
    pub async fn abort(&self, key: &str, upload_id: &str) -> Result<(), String> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map(|_| ())
            .map_err(failed("AbortMultipartUpload"))
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(failed("PutObject"))
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, String> {
        let out = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(failed("GetObject"))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| format!("S3 GetObject failed reading the body: {e}"))?;
        Ok(body.into_bytes().to_vec())
    }

    pub async fn delete(&self, key: &str) -> Result<(), String> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(failed("DeleteObject"))
    }

    /// A link that downloads the file for `valid` with the function's own credentials.
    pub async fn download_url(&self, key: &str, valid: Duration) -> Result<String, String> {
        let presigning = PresigningConfig::expires_in(valid).map_err(|e| e.to_string())?;
        let request = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(failed("presigning GetObject"))?;
        Ok(request.uri().to_owned())
    }
}
