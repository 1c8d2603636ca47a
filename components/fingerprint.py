"""The dataset source's content hash: ingest takes it as an input, so changed data is never served from cache."""


def fingerprint_source(params_yaml: str, source: str = "", location: str = "", name: str = "",
                       s3_endpoint_url: str = "") -> str:
    """Hash the dataset source's content (files, s3:// objects, or torchvision's fixed md5s); never cached."""
    from skdd.kfp_steps import fingerprint_step

    return fingerprint_step(params_yaml, {"source": source, "location": location, "name": name},
                            s3_endpoint_url=s3_endpoint_url)
