//! Placeholder until the SFTP module lands (being written in parallel).
pub async fn serve<S>(_stream: S, _home: std::path::PathBuf)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
}
