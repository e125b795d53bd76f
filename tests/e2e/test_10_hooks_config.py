"""The module's configuration: `nginx -t` names what is wrong, and the Redis
command connection also runs for a panel-only configuration."""

import os

import pytest

from hamrahi import PanelClient, PrivateNginx, hook_metrics, panel_token, wait_until


def hooks_conf(env, hook_secret=None, token=None, base_url="http://127.0.0.1:1", extra=""):
    lines = [
        f"    hamrahi_hook_secret_file {hook_secret or env['HAMRAHI_HOOK_SECRET_FILE']};",
        f"    hamrahi_twilio_token_file {token or env['HAMRAHI_TELEPHONY_TOKEN_FILE']};",
    ]
    if base_url:
        lines.append(f"    hamrahi_public_base_url {base_url};")
    return "\n".join(lines) + "\n" + extra


HOOKS = "        location /v1/ { hamrahi_hooks; }"


@pytest.fixture
def conf_dir(tmp_path):
    return str(tmp_path)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def test_valid_configuration_passes(stack, conf_dir):
    rc, out = PrivateNginx(stack, conf_dir, hooks_conf(stack.env), HOOKS).check()
    assert rc == 0, out


@pytest.mark.parametrize("directive,key", [
    ("hamrahi_hook_secret_file", "hook_secret"),
    ("hamrahi_twilio_token_file", "token"),
])
@pytest.mark.parametrize("content", [None, "", "  \n\t\n"])
def test_missing_or_empty_secret_file_fails_naming_the_directive(stack, conf_dir, directive,
                                                                 key, content):
    path = os.path.join(conf_dir, "secret")
    if content is not None:
        write(path, content)
    rc, out = PrivateNginx(stack, conf_dir, hooks_conf(stack.env, **{key: path}), HOOKS).check()
    assert rc != 0
    assert directive in out, out
    assert path in out, out
    assert ("empty" if content is not None else "cannot open") in out, out


@pytest.mark.parametrize("missing", ["hamrahi_hook_secret_file", "hamrahi_twilio_token_file",
                                     "hamrahi_public_base_url", "hamrahi_redis"])
def test_hooks_without_a_required_directive_fail(stack, conf_dir, missing):
    conf = "\n".join(line for line in hooks_conf(stack.env).splitlines()
                     if missing not in line)
    rc, out = PrivateNginx(stack, conf_dir, conf, HOOKS,
                           redis=missing != "hamrahi_redis").check()
    assert rc != 0
    assert missing in out, out


@pytest.mark.parametrize("directive,value", [
    ("hamrahi_public_base_url", "ftp://hooks.example.test"),
    ("hamrahi_public_base_url", "hooks.example.test"),
    ("hamrahi_redis_timeout", "soon"),
    ("hamrahi_stream_maxlen", "0"),
    ("hamrahi_hook_max_body", "big"),
])
def test_bad_value_fails_naming_the_directive(stack, conf_dir, directive, value):
    conf = hooks_conf(stack.env, base_url=None if directive == "hamrahi_public_base_url"
                      else "http://127.0.0.1:1", extra=f"    {directive} {value};\n")
    rc, out = PrivateNginx(stack, conf_dir, conf, HOOKS).check()
    assert rc != 0
    assert directive in out or value in out, out


def test_bad_redis_address_fails(stack, conf_dir):
    conf = hooks_conf(stack.env, extra="    hamrahi_redis 127.0.0.1:notaport;\n")
    rc, out = PrivateNginx(stack, conf_dir, conf, HOOKS, redis=False).check()
    assert rc != 0
    assert "hamrahi_redis" in out and "notaport" in out, out


def test_secret_is_never_inline(stack, conf_dir):
    """There is no directive that takes a secret's value."""
    conf = hooks_conf(stack.env, extra="    hamrahi_hook_secret s3cret;\n")
    rc, out = PrivateNginx(stack, conf_dir, conf, HOOKS).check()
    assert rc != 0
    assert "unknown directive" in out, out


def test_panel_only_configuration_runs_the_command_connection(stack, conf_dir):
    """A panel's resume reads the log through the hook module's command
    connection: it must run even where no location has hamrahi_hooks."""
    env = stack.env
    nginx = PrivateNginx(
        stack, conf_dir, f"    hamrahi_panel_secret_file {env['HAMRAHI_PANEL_SECRET_FILE']};",
        "        location = /v1/panel/ws { hamrahi_panel_ws; }\n"
        "        location = /metrics { hamrahi_status; }").start()
    try:
        wait_until(lambda: hook_metrics(nginx).get('hamrahi_redis_up{worker="0"}') == 1, 5,
                   what="redis command connection up")
        epoch = stack.redis.get("hamrahi:panel:epoch")
        seq = stack.redis.get("hamrahi:panel:seq")
        if epoch is None or seq is None:
            return
        token = panel_token(stack.panel_secret, "op-none", "operator", "st-none")
        panel = PanelClient(nginx.url.replace("http://", "ws://") + "/v1/panel/ws", token,
                            query=f"since={seq}&epoch={epoch}")
        try:
            with pytest.raises(AssertionError):
                panel.next(1.0, match=lambda m: m.get("type") == "resync_required")
        finally:
            panel.close()
    finally:
        nginx.stop()
