from radbridge.settings import Settings


def test_env_overrides_config_file_which_overrides_defaults(tmp_path, monkeypatch):
    cfg = tmp_path / "radbridge.toml"
    cfg.write_text('output_topic = "drafts.from.file"\nbatch_size = 4\ninput_topics = ["a", "b"]\n')
    monkeypatch.setenv("RADBRIDGE_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("RADBRIDGE_BATCH_SIZE", "16")
    s = Settings()
    assert s.output_topic == "drafts.from.file"
    assert s.batch_size == 16
    assert s.input_topics == ["a", "b"]


def test_comma_separated_topics_from_env(monkeypatch):
    monkeypatch.setenv("RADBRIDGE_INPUT_TOPICS", "ris.oru, fhir.reports ,")
    assert Settings().input_topics == ["ris.oru", "fhir.reports"]


def test_secrets_are_masked_when_printed(monkeypatch):
    monkeypatch.setenv("RADBRIDGE_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("RADBRIDGE_FHIR_TOKEN", "tok-123")
    s = Settings()
    dumped = str(s.public_dict()) + repr(s) + str(s)
    assert "hunter2" not in dumped and "tok-123" not in dumped
    assert s.sasl_password.get_secret_value() == "hunter2"


def test_embedded_defaults_need_no_configuration(monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith("RADBRIDGE_"):
            monkeypatch.delenv(k)
    s = Settings()
    assert s.kafka_bootstrap is None and s.backend == "local" and s.output_status == "preliminary"
