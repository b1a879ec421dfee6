"""A gunicorn deployment's settings and flags (mirrors python/ferrule/gunicorn.py): each
gunicorn 27 setting, hook and flag is implemented, logged or refused with one line;
values are coerced as gunicorn does; users and groups are checked at start-up."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import APPS, free_port, get, wait_until

# Every setting and hook of gunicorn 27.0.1 (gunicorn/config.py, each Setting subclass).
GUNICORN_SETTINGS = """
config wsgi_app bind backlog workers worker_class threads worker_connections max_requests max_requests_jitter
timeout graceful_timeout keepalive limit_request_line limit_request_fields limit_request_field_size reload
reload_engine reload_extra_files spew check_config print_config preload_app sendfile reuse_port chdir daemon
raw_env pidfile worker_tmp_dir user group umask initgroups tmp_upload_dir secure_scheme_headers
forwarded_allow_ips accesslog disable_redirect_access_to_syslog access_log_format errorlog loglevel
capture_output logger_class logconfig logconfig_dict logconfig_json syslog_addr syslog syslog_prefix
syslog_facility enable_stdio_inheritance statsd_host dogstatsd_tags statsd_prefix enable_backlog_metric
proc_name default_proc_name pythonpath paste proxy_protocol proxy_allow_ips protocol uwsgi_allow_ips keyfile
certfile ssl_version cert_reqs ca_certs suppress_ragged_eofs do_handshake_on_connect ciphers http_protocols
http2_cleartext http2_max_concurrent_streams http2_initial_window_size http2_max_frame_size
http2_max_header_list_size raw_paste_global_conf permit_obsolete_folding strip_header_spaces
permit_unconventional_http_method permit_unconventional_http_version casefold_http_method forwarder_headers
header_map asgi_loop asgi_lifespan asgi_disconnect_grace_period websocket_max_message_size http_parser
root_path dirty_apps dirty_workers dirty_timeout dirty_threads dirty_graceful_timeout control_socket
control_socket_mode control_socket_disable
""".split()
GUNICORN_HOOKS = """
on_starting on_reload when_ready pre_fork post_fork post_worker_init worker_int worker_abort pre_exec
pre_request post_request child_exit worker_exit nworkers_changed on_exit ssl_context on_dirty_starting
dirty_post_fork dirty_worker_init dirty_worker_exit
""".split()
GUNICORN_FLAGS = """
-c --config -b --bind --backlog -w --workers -k --worker-class --threads --worker-connections --max-requests
--max-requests-jitter -t --timeout --graceful-timeout --keep-alive --limit-request-line --limit-request-fields
--limit-request-field_size --reload --reload-engine --reload-extra-file --spew --check-config --print-config
--preload --no-sendfile --reuse-port --chdir -D --daemon -e --env -p --pid --worker-tmp-dir -u --user -g
--group -m --umask --initgroups --forwarded-allow-ips --access-logfile --disable-redirect-access-to-syslog
--access-logformat --error-logfile --log-file --log-level --capture-output --logger-class --log-config
--log-config-json --log-syslog-to --log-syslog --log-syslog-prefix --log-syslog-facility -R
--enable-stdio-inheritance --statsd-host --dogstatsd-tags --statsd-prefix --enable-backlog-metric -n --name
--pythonpath --paste --paster --proxy-protocol --proxy-allow-from --protocol --uwsgi-allow-from --keyfile
--certfile --ssl-version --cert-reqs --ca-certs --suppress-ragged-eofs --do-handshake-on-connect --ciphers
--http-protocols --http2-cleartext --http2-max-concurrent-streams --http2-initial-window-size
--http2-max-frame-size --http2-max-header-list-size --paste-global --permit-obsolete-folding
--strip-header-spaces --permit-unconventional-http-method --permit-unconventional-http-version
--casefold-http-method --forwarder-headers --header-map --asgi-loop --asgi-lifespan
--asgi-disconnect-grace-period --websocket-max-message-size --http-parser --root-path --dirty-app
--dirty-workers --dirty-timeout --dirty-threads --dirty-graceful-timeout --control-socket
--control-socket-mode --no-control-socket
""".split()


def ferrule(*args, cwd=APPS, env=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "ferrule", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_error_line(r, code=2):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferrule: error: "), r.stderr
    return lines[0]


# Point 5: users and groups -------------------------------------------------------

@pytest.mark.parametrize("flag, name", [("-u", "user"), ("-g", "group")])
def test_an_unknown_user_or_group_is_one_line_at_start_up_and_in_check_config(flag, name):
    for extra in ([], ["--check-config"]):
        r = ferrule("compat_app:app", flag, "nosuch_x9", "-b", f"127.0.0.1:{free_port()}", *extra)
        line = one_error_line(r)
        assert f"{name} 'nosuch_x9'" in line and f"no such {name}" in line


@pytest.mark.parametrize("flag, name", [("-u", "user"), ("-g", "group")])
def test_an_id_out_of_range_is_one_line_at_start_up(flag, name):
    # Before: accepted, then every worker died in setuid() with "the error is above" and nothing above.
    r = ferrule("compat_app:app", flag, "4294967296", "-b", f"127.0.0.1:{free_port()}")
    assert f"{name} '4294967296' (--{name}): an id is at most 4294967294" in one_error_line(r)


@pytest.mark.skipif(os.geteuid() != 0, reason="--initgroups is only used as root")
def test_initgroups_with_a_numeric_user_unknown_to_the_system_is_one_line_at_start_up():
    import pwd
    uid = next(u for u in range(54321, 60000) if u not in {p.pw_uid for p in pwd.getpwall()})
    r = ferrule("compat_app:app", "-u", str(uid), "--initgroups", "-b", f"127.0.0.1:{free_port()}")
    assert "--initgroups needs a user in the password database" in one_error_line(r)


def test_a_known_user_by_name_and_id_is_accepted():
    import pwd
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert ferrule("compat_app:app", "-u", me, "--check-config").returncode == 0
    assert ferrule("compat_app:app", "-u", str(os.geteuid()), "-g", str(os.getegid()),
                   "--check-config").returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_workers_switch_to_a_user_and_group_by_name(tmp_path):
    import grp
    import pwd
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "compat_app:app", "--chdir", str(APPS),
                             "-b", f"127.0.0.1:{port}", "-u", "nobody", "-g", "nogroup"],
                            stderr=open(tmp_path / "err", "wb"))
    try:
        wait_until(lambda: _answers(port))
        from conftest import children
        (worker,) = children(proc.pid)
        status = open(f"/proc/{worker}/status").read()
        assert f"\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n" in status
        assert f"\nGid:\t{gid}\t{gid}\t{gid}\t{gid}\n" in status
        assert "\nGroups:\t" + str(gid) + " \n" in status
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to nobody")
def test_switching_users_without_root_is_one_line():
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m",
                        "ferrule", "compat_app:app", "-u", "root", "--check-config"],
                       cwd=APPS, capture_output=True, text=True, timeout=30)
    line = one_error_line(r)
    assert "user 'root' (--user): switching the workers to another user needs root" in line


# Point 6: every gunicorn setting, hook and flag is known ---------------------------

def test_every_gunicorn_27_setting_hook_and_flag_is_known():
    from ferrule import cli, config, gunicorn
    assert set(GUNICORN_SETTINGS) == set(gunicorn.BY_NAME)
    assert set(GUNICORN_HOOKS) == set(config.HOOKS) | set(gunicorn.INERT_HOOKS)
    assert config.HOOKS["pre_exec"] == 1
    options = {o for a in cli.build_parser()._actions for o in a.option_strings}
    assert set(GUNICORN_FLAGS) <= options, set(GUNICORN_FLAGS) - options


def test_the_migration_guide_lists_every_gunicorn_setting_hook_and_flag():
    from pathlib import Path
    text = (Path(__file__).parent.parent / "docs" / "migrating-from-gunicorn.md").read_text()
    for name in GUNICORN_SETTINGS + GUNICORN_HOOKS + GUNICORN_FLAGS:
        assert f"`{name}`" in text, name


def _sample(flag, action):
    """A value other than gunicorn's default for a flag."""
    if action.nargs == 0:
        return []
    if "allow" in flag:
        return ["10.0.0.0/8"]
    if action.metavar in ("INT", "MB") or flag in ("--cert-reqs", "--ssl-version"):
        return ["7"]
    if action.choices:
        return [list(action.choices)[-1]]
    return {"-k": ["gevent"], "--worker-class": ["gthread"], "--reload-engine": ["poll"],
            "--http-parser": ["python"], "--proxy-protocol": ["v2"], "--protocol": ["uwsgi"],
            "--log-level": ["DEBUG"], "--http-protocols": ["h2"], "-b": ["127.0.0.1:0"],
            "--bind": ["tcp://127.0.0.1:0"], "-u": [str(os.geteuid())], "--user": [str(os.geteuid())],
            "-g": [str(os.getegid())], "--group": [str(os.getegid())], "-m": ["022"], "--umask": ["0o22"],
            "-e": ["A=B"], "--env": ["A=B"], "-t": ["5"], "--timeout": ["5"], "--graceful-timeout": ["5"],
            "--keep-alive": ["5"]}.get(flag, ["/tmp/x"])


def test_every_gunicorn_flag_is_implemented_logged_or_refused_with_its_name():
    from ferrule import cli, config
    parser = cli.build_parser()
    actions = {o: a for a in parser._actions for o in a.option_strings}
    outcomes = {}
    for flag in GUNICORN_FLAGS:
        if flag in ("-c", "--config", "--check-config", "--print-config"):
            continue
        argv = ["compat_app:app", flag, *_sample(flag, actions[flag])]
        args = vars(parser.parse_args(argv))  # argparse would exit 2 on an unknown flag
        try:
            _, _, notes = cli.load_settings(args, {})
            outcomes[flag] = "logged" if notes else "implemented"
        except config.ConfigFileError as exc:
            message = str(exc)
            names = tuple(actions[flag].option_strings)
            assert "\n" not in message and message.startswith(names), (flag, message)
            outcomes[flag] = "refused"
    assert outcomes["--log-syslog"] == outcomes["--log-syslog-to"] == "implemented"  # docs/logging.md "Syslog"
    assert outcomes["--statsd-host"] == outcomes["--statsd-prefix"] == outcomes["--dogstatsd-tags"] == "implemented"
    assert outcomes["--certfile"] == outcomes["--keyfile"] == "implemented"  # read by the core, at start-up
    assert outcomes["-k"] == "refused" and outcomes["--worker-class"] == "logged"
    assert outcomes["--worker-tmp-dir"] == "logged" and outcomes["--ca-certs"] == "implemented"
    assert outcomes["--daemon"] == outcomes["--capture-output"] == "implemented"


@pytest.mark.parametrize("text, words", [
    ("logger_class = 'myapp.MyLogger'\n", "setting 'logger_class': a logger class is not supported"),
    ("worker_class = 'uvicorn.workers.UvicornWorker'\n", "ferrule serves WSGI apps only"),
    ("worker_class = 'gevent'\n", "no gevent/eventlet/tornado"),
    ("reload_extra_files = ['templates/a.html']\n", "setting 'reload_extra_files': not implemented"),
    ("paste = 'development.ini'\n", "setting 'paste': PasteDeploy is not supported"),
    ("http_protocols = 'h2,h1'\n", "setting 'http_protocols'"),
])
def test_a_gunicorn_setting_ferrule_would_drop_stops_start_up_with_one_line(tmp_path, text, words):
    conf = tmp_path / "g.conf.py"
    conf.write_text(text)
    for extra in ([], ["--check-config"]):
        line = one_error_line(ferrule("compat_app:app", "-c", str(conf), "-b", f"127.0.0.1:{free_port()}", *extra))
        assert words in line, line


def test_gunicorn_defaults_and_inert_settings_are_accepted_and_logged_ones_say_so(tmp_path):
    conf = tmp_path / "g.conf.py"
    conf.write_text("""
certfile = None
keyfile = None
ca_certs = None
cert_reqs = 0
proxy_protocol = False
statsd_host = None
syslog = False
syslog_addr = 'udp://localhost:514'
logconfig_dict = {}
secure_scheme_headers = {'X-FORWARDED-PROTOCOL': 'ssl', 'X-FORWARDED-PROTO': 'https', 'X-FORWARDED-SSL': 'on'}
sendfile = True
http_protocols = 'h1'
control_socket_disable = True
worker_class = 'gthread'
worker_connections = 2000
worker_tmp_dir = '/dev/shm'
proc_name = 'shop'
def pre_exec(server): pass
def ssl_context(config, default_ssl_context_factory): return default_ssl_context_factory()
def post_request(worker, req): pass
""")
    r = ferrule("compat_app:app", "-c", str(conf), "--check-config")
    assert r.returncode == 0, r.stderr
    assert "worker_class 'gthread': ferrule's workers run the app on up to --threads threads" in r.stderr
    assert "worker_tmp_dir = '/dev/shm' accepted: ferrule's workers send their heartbeat over a pipe" in r.stderr
    assert "worker_connections = 2000 accepted" in r.stderr and "proc_name = 'shop' accepted" in r.stderr
    assert "hook ssl_context accepted but never called" in r.stderr
    assert "certfile =" not in r.stderr and "secure_scheme_headers" not in r.stderr


def test_worker_class_on_the_command_line(tmp_path):
    r = ferrule("compat_app:app", "-k", "sync", "--check-config")
    assert r.returncode == 0 and "worker_class 'sync'" in r.stderr and "threads = 1" in r.stderr
    line = one_error_line(ferrule("compat_app:app", "-k", "uvicorn.workers.UvicornWorker"))
    assert "--worker-class: 'uvicorn.workers.UvicornWorker'" in line and "ferrule serves WSGI" in line
    # TLS is implemented: the files are read at start-up, and one that is missing is exit 3.
    line = one_error_line(ferrule("compat_app:app", "--certfile", "c.pem", "--keyfile", "k.pem"), code=3)
    assert "cannot read c.pem" in line
    # statsd is implemented (docs/observability.md): a good address passes, a bad one is one line.
    r = ferrule("compat_app:app", "--statsd-host", "127.0.0.1:8125", "--statsd-prefix", "shop", "--check-config")
    assert r.returncode == 0, r.stderr
    line = one_error_line(ferrule("compat_app:app", "--statsd-host", "127.0.0.1:notaport", "--check-config"))
    assert "statsd-host" in line
    # syslog is implemented (docs/logging.md): a bad facility from GUNICORN_CMD_ARGS is one line.
    r = ferrule("compat_app:app", "--check-config", env={"GUNICORN_CMD_ARGS": "--log-syslog"})
    assert r.returncode == 0, r.stderr
    line = one_error_line(ferrule("compat_app:app", "--check-config",
                                  env={"GUNICORN_CMD_ARGS": "--log-syslog --log-syslog-facility local9"}))
    assert "log-syslog-facility must be one of" in line


@pytest.mark.parametrize("uri, accepted", [("egg:gunicorn#gthread", True), ("egg:gunicorn#sync", True),
                                           ("egg:gunicorn#gevent", False)])
def test_worker_class_in_gunicorn_s_egg_uri_form(uri, accepted):
    # Before: egg:gunicorn#gthread was refused as an ASGI worker.
    r = ferrule("compat_app:app", "-k", uri, "--check-config")
    if accepted:
        assert r.returncode == 0 and "ferrule's workers run the app on up to --threads threads" in r.stderr, r.stderr
    else:
        assert "no gevent/eventlet/tornado workers" in one_error_line(r)


def test_a_post_request_hook_with_two_arguments_and_a_hook_by_dotted_path(tmp_path):
    (tmp_path / "myhooks.py").write_text("def ready(server):\n    open(server.cfg.pidfile + '.hook', 'w').close()\n")
    port = free_port()
    pid = tmp_path / "p.pid"
    conf = tmp_path / "g.conf.py"
    conf.write_text(f"bind = 'tcp://127.0.0.1:{port}'\npidfile = {str(pid)!r}\nwhen_ready = 'myhooks.ready'\n"
                    "import os\n"
                    "def post_request(worker, req):\n"
                    "    open(os.environ['MARK'], 'a').write(req.path + '\\n')\n")
    mark = tmp_path / "mark"
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "compat_app:app", "-c", str(conf),
                             "--chdir", str(APPS)],
                            env={**os.environ, "MARK": str(mark), "PYTHONPATH": str(tmp_path)},
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (tmp_path / "p.pid.hook").exists())
        wait_until(lambda: _answers(port))
        wait_until(lambda: mark.exists() and "/" in mark.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def _answers(port):
    try:
        return get(port, "/")[0] == 200
    except OSError:
        return False


# Point 7: coercion ----------------------------------------------------------------

def test_config_values_are_coerced_as_gunicorn_does(tmp_path):
    conf = tmp_path / "g.conf.py"
    conf.write_text("import os\n"
                    "workers = '3'\n"
                    "timeout = os.environ.get('APP_TIMEOUT', '60')\n"
                    "preload_app = 'true'\n"
                    "reuse_port = 'False'\n"
                    "keepalive = '5'\n"
                    "backlog = '0x40'\n"
                    "umask = '022'\n"
                    "loglevel = 'DEBUG'\n"
                    "forwarded_allow_ips = ['10.0.0.0/8', '127.0.0.1']\n")
    r = ferrule("-c", str(conf), "--print-config")
    assert r.returncode == 0, r.stderr
    for line in ("workers                      = 3", "timeout                      = 60.0",
                 "preload_app                  = True", "reuse_port                   = False",
                 "keepalive                    = 5.0", "backlog                      = 64",
                 "umask                        = 18", "loglevel                     = 'debug'",
                 "forwarded_allow_ips          = '10.0.0.0/8,127.0.0.1'"):
        assert line in r.stdout, (line, r.stdout)


@pytest.mark.parametrize("text, words", [
    ("workers = 'many'\n", "setting 'workers' must be an integer >= 0 (got 'many')"),
    ("workers = -2\n", "setting 'workers' must be an integer >= 0 (got -2)"),
    ("preload_app = 'yes'\n", "setting 'preload_app' must be True or False (got 'yes')"),
    ("timeout = 'soon'\n", "setting 'timeout' must be a number of seconds >= 0 (got 'soon')"),
    ("timeout = 'nan'\n", "setting 'timeout' must be a number of seconds >= 0"),
    ("forwarded_allow_ips = '10.0.0.1/8'\n", "setting 'forwarded_allow_ips' '10.0.0.1/8' is not an IP address"),
    ("protocol = 'fastcgi'\n", "setting 'protocol' must be one of http, uwsgi (got 'fastcgi')"),
    ("uwsgi_allow_ips = 'nginx.local'\n", "setting 'uwsgi_allow_ips' 'nginx.local' is not an IP address"),
    ("loglevel = 'loud'\n", "setting 'loglevel' must be one of debug"),
    ("bind = ['127.0.0.1:8000', None]\n", "setting 'bind' must be a string or a list of strings"),
    ("raw_env = ['A=1', 2]\n", "setting 'raw_env' must be a string or a list of strings"),
    ("threads = 10**20\n", "setting 'threads' must be an integer from 0 to 9223372036854775807"),
    ("limit_request_line = '99999999999999999999'\n", "setting 'limit_request_line' must be an integer from 0 to"),
])
def test_bad_values_are_still_one_line_and_exit_2(tmp_path, text, words):
    conf = tmp_path / "g.conf.py"
    conf.write_text(text)
    line = one_error_line(ferrule("compat_app:app", "-c", str(conf), "--check-config"))
    assert words in line, line


@pytest.mark.parametrize("text, words", [
    ("--wrokers=3", "GUNICORN_CMD_ARGS='--wrokers=3': unrecognized arguments: --wrokers=3"),
    ("--workers", "GUNICORN_CMD_ARGS='--workers': argument -w/--workers: expected one argument"),
    ("--workers=many", "GUNICORN_CMD_ARGS='--workers=many': argument -w/--workers: must be an integer >= 0"),
])
def test_a_bad_flag_in_gunicorn_cmd_args_is_one_line_naming_the_variable(text, words):
    # Before: argparse's usage and error lines, then a third line pointing "above".
    line = one_error_line(ferrule("compat_app:app", "--check-config", env={"GUNICORN_CMD_ARGS": text}))
    assert words in line, line


def test_a_misspelt_setting_in_a_config_file_is_named_and_helpers_are_not(tmp_path):
    # Before: `wrokers = 4` was dropped without a word. gunicorn ignores unknown names, and
    # well-known configs carry helpers (graceful_timeout_str, port), so it is a line, not exit 2.
    conf = tmp_path / "g.conf.py"
    conf.write_text("import os\nwrokers = 4\ngraceful_timeout_str = '120'\nport = 8000\nuse_loglevel = 'info'\n"
                    "def helper(x):\n    return x\ndef when_redy(server):\n    pass\n")
    r = ferrule("compat_app:app", "-c", str(conf), "--check-config")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "is not a setting" in line]
    assert len(lines) == 2, r.stderr
    assert f"config file {conf}: 'wrokers' is not a setting, ignored as gunicorn does (did you mean 'workers'?)" \
        in lines[0]
    assert "'when_redy' is not a setting, ignored as gunicorn does (did you mean 'when_ready'?)" in lines[1]


def test_gunicorn_cmd_args_with_an_unclosed_quote_is_one_line_and_exit_2():
    line = one_error_line(ferrule("compat_app:app", "--check-config", env={"GUNICORN_CMD_ARGS": "--timeout '30"}))
    assert "GUNICORN_CMD_ARGS: cannot split \"--timeout '30\" into arguments: No closing quotation" in line, line


def test_a_config_module_and_a_tcp_bind_and_a_log_level_in_capitals(tmp_path):
    port = free_port()
    (tmp_path / "deploy_settings.py").write_text(f"bind = 'tcp://127.0.0.1:{port}'\nworkers = '1'\n")
    errlog = tmp_path / "err.log"
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "compat_app:app", "-c", "python:deploy_settings",
                             "--chdir", str(APPS), "--log-level", "DEBUG", "--error-logfile", str(errlog)],
                            env={**os.environ, "PYTHONPATH": str(tmp_path)}, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(port))
        text = errlog.read_text()
        # gunicorn's debug start-up: the resolved configuration, one setting a line.
        assert "Current configuration:\n" in text
        assert "\n  workers: 1\n" in text and f"\n  bind: ['tcp://127.0.0.1:{port}']\n" in text
        assert "\n  loglevel: debug\n" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    line = one_error_line(ferrule("compat_app:app", "-c", "python:no_such_config_module_x9"))
    assert "config file 'python:no_such_config_module_x9' failed: ModuleNotFoundError" in line


def test_hup_reads_a_config_module_again(tmp_path):
    port = free_port()
    mod = tmp_path / "live_settings.py"
    mark = tmp_path / "mark"
    hook = f"def on_reload(server):\n    open({str(mark)!r}, 'w').write(str(server.cfg.workers))\n"
    mod.write_text(f"bind = '127.0.0.1:{port}'\nworkers = 1\n" + hook)
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "compat_app:app", "-c", "python:live_settings",
                             "--chdir", str(APPS)], env={**os.environ, "PYTHONPATH": str(tmp_path)},
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(port))
        mod.write_text(f"bind = '127.0.0.1:{port}'\nworkers = 2  # two now\n" + hook)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: mark.exists() and mark.read_text() == "2")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_hup_applies_a_changed_raw_env_to_the_new_workers(tmp_path):
    # Before: the new workers kept the first raw_env (gunicorn's reload sets the new one).
    port = free_port()
    conf, mark = tmp_path / "g.conf.py", tmp_path / "mark"
    hook = (f"import os\ndef post_worker_init(worker):\n"
            f"    open({str(mark)!r}, 'a').write(os.environ.get('FERRULE_T_FOO', '-') + '\\n')\n")
    conf.write_text(f"bind = '127.0.0.1:{port}'\nraw_env = ['FERRULE_T_FOO=one']\n" + hook)
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "compat_app:app", "-c", str(conf), "--chdir", str(APPS)],
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: mark.exists() and mark.read_text() == "one\n")
        conf.write_text(f"bind = '127.0.0.1:{port}'\nraw_env = ['FERRULE_T_FOO=two']\n" + hook)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: mark.read_text() == "one\ntwo\n")
        # A bad entry is refused on HUP like any bad value: the running settings stay.
        conf.write_text(f"bind = '127.0.0.1:{port}'\nraw_env = ['FERRULE_T_FOO=three', 'NOEQUALS']\n" + hook)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: mark.read_text() == "one\ntwo\ntwo\n")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


@pytest.mark.parametrize("explicit", [False, True])
def test_hup_after_chdir_reads_the_same_config_file(tmp_path, explicit):
    # Before: HUP looked for ./gunicorn.conf.py (or -c's relative path) in the --chdir
    # directory: the settings fell back to the defaults, or to another directory's file.
    port = free_port()
    start, other, mark = tmp_path / "etc", tmp_path / "srv", tmp_path / "mark"
    start.mkdir()
    other.mkdir()
    shutil.copy(APPS / "compat_app.py", other)
    hook = f"def on_reload(server):\n    open({str(mark)!r}, 'w').write(str(server.cfg.workers))\n"
    (start / "gunicorn.conf.py").write_text(f"bind = '127.0.0.1:{port}'\nworkers = 2\n" + hook)
    (other / "gunicorn.conf.py").write_text("workers = 3\n" + hook)  # must not be read
    flags = ["-c", "gunicorn.conf.py"] if explicit else []
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "compat_app:app", "--chdir", str(other), *flags],
                            cwd=start, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(port))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: mark.exists() and mark.read_text() != "")
        assert mark.read_text() == "2"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


# Point 9: hooks see gunicorn's names ------------------------------------------------

def test_hooks_see_gunicorn_setting_names_on_server_cfg(tmp_path):
    port = free_port()
    out = tmp_path / "cfg.json"
    conf = tmp_path / "g.conf.py"
    conf.write_text(f"""
import json
bind = '127.0.0.1:{port}'
workers = 1
timeout = 7
keepalive = 4
accesslog = '-'
loglevel = 'warning'
proc_name = 'shop'
worker_tmp_dir = '/dev/shm'
NAMES = ['accesslog', 'errorlog', 'loglevel', 'bind', 'workers', 'timeout', 'keepalive', 'preload_app',
         'proc_name', 'worker_tmp_dir', 'certfile', 'proxy_protocol', 'raw_env', 'wsgi_app', 'threads',
         'access_log_format', 'worker_class_str', 'is_ssl', 'uid', 'gid']
def when_ready(server):
    with open({str(out)!r}, 'w') as f:
        json.dump({{n: getattr(server.cfg, n) for n in NAMES}}, f)
""")
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "compat_app:app", "-c", str(conf),
                             "--chdir", str(APPS)], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: out.exists() and out.read_text())
        seen = json.loads(out.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert seen == {
        "accesslog": "-", "errorlog": "-", "loglevel": "warning", "bind": [f"127.0.0.1:{port}"], "workers": 1,
        "timeout": 7.0, "keepalive": 4.0, "preload_app": False, "proc_name": "shop",
        "worker_tmp_dir": "/dev/shm", "certfile": None, "proxy_protocol": "off", "raw_env": [],
        "wsgi_app": "compat_app:app", "threads": 512,
        "access_log_format": '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
        "worker_class_str": "gthread", "is_ssl": False, "uid": os.geteuid(), "gid": os.getegid()}


@pytest.mark.parametrize("unbuffered", ["1", ""])
@pytest.mark.parametrize("command", ["--print-config", "--check-config", "--version", "--help"])
def test_print_and_check_config_into_a_closed_pipe_exit_0_without_a_traceback(command, unbuffered):
    # `ferrule --print-config | head -1`: before, a BrokenPipeError traceback and exit 1
    # (PYTHONUNBUFFERED, common in containers), or exit 120.
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "ferrule", "compat_app:app", command], cwd=APPS, stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=30,
                           env={**os.environ, "PYTHONUNBUFFERED": unbuffered})
    finally:
        os.close(w)
    assert p.returncode == 0, p.stderr
    assert "Error" not in p.stderr and "Exception" not in p.stderr, p.stderr


def test_print_config_uses_gunicorn_names_and_ferrule_only_settings_keep_theirs():
    r = ferrule("compat_app:app", "--print-config", "--keep-alive", "9", "--access-logfile", "-")
    names = [line.split()[0] for line in r.stdout.splitlines()]
    for name in ("keepalive", "accesslog", "errorlog", "loglevel", "wsgi_app", "raw_env", "access_log_format",
                 "header_timeout", "io_timeout", "max_worker_memory"):
        assert name in names, name
    for name in ("keep_alive", "access_logfile", "error_logfile", "log_level", "app", "env"):
        assert name not in names, name


# Point 8: --forwarded-allow-ips ------------------------------------------------------

def _scheme(port, host="127.0.0.1"):
    with socket.create_connection((host, port), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    return data.rsplit(b"\r\n\r\n", 1)[1].decode()


@pytest.mark.parametrize("allow, dual_stack, scheme", [
    ("127.0.0.2", False, "http"),            # an exact address means only that address
    ("127.0.0.1", False, "https"),
    ("127.0.0.0/8", False, "https"),         # a network
    ("10.0.0.0/8,fd00::/8", False, "http"),
    ("127.0.0.1", True, "https"),            # a dual-stack socket sees ::ffff:127.0.0.1
    ("127.0.0.0/8", True, "https"),
    ("::1", True, "http"),
])
def test_forwarded_allow_ips_takes_networks_and_exact_addresses(allow, dual_stack, scheme, tmp_path):
    # A dual-stack socket handed in (fd://N), as `-b [::]:PORT` makes one.
    listener = socket.socket(socket.AF_INET6 if dual_stack else socket.AF_INET)
    if dual_stack:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::" if dual_stack else "127.0.0.1", 0))
    listener.listen(16)
    port, fd = listener.getsockname()[1], listener.fileno()
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "compat_app:app", "--chdir", str(APPS),
                             "-b", f"fd://{fd}", "--forwarded-allow-ips", allow], pass_fds=(fd,),
                            stderr=open(tmp_path / "err", "wb"))
    listener.close()
    try:
        wait_until(lambda: _answers(port))
        assert _scheme(port) == scheme, (tmp_path / "err").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_a_bad_forwarded_allow_ips_is_one_line():
    line = one_error_line(ferrule("compat_app:app", "--forwarded-allow-ips", "10.0.0.1/8", "--check-config"))
    assert "10.0.0.1/8" in line and "host bits" in line


# --daemon and --capture-output ------------------------------------------------------

def test_daemon_detaches_writes_the_pid_file_and_returns_once_ready(tmp_path):
    port = free_port()
    pidfile = tmp_path / "d.pid"
    errlog = tmp_path / "err.log"
    started = time.monotonic()
    r = ferrule("compat_app:app", "-b", f"127.0.0.1:{port}", "--daemon", "-p", str(pidfile),
                "--error-logfile", str(errlog), cwd=APPS)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started < 20
    pid = int(pidfile.read_text())
    try:
        # Already listening when the command returned; detached: its own session, parent init-like.
        assert get(port, "/")[1] == "http"
        assert os.getsid(pid) != os.getsid(0)
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        assert ppid != os.getpid()
        fds = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in (0, 1, 2)}
        assert set(fds.values()) == {"/dev/null"}, fds
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"))
    assert not pidfile.exists()
    assert "Shutting down: Master" in errlog.read_text()


def test_a_pid_file_in_a_missing_directory_is_one_line_and_exit_2(tmp_path):
    # Before: not seen by --check-config; at start-up the sockets were bound, then exit 1.
    pidfile = str(tmp_path / "no" / "d.pid")
    for extra in ([], ["--check-config"], ["--daemon"]):
        r = ferrule("compat_app:app", "-b", f"127.0.0.1:{free_port()}", "-p", pidfile, *extra)
        assert f"--pid '{pidfile}': directory '{tmp_path / 'no'}' does not exist" in one_error_line(r)


def test_daemon_returns_once_ready_even_if_a_hook_forked_a_long_lived_child(tmp_path):
    # Before: the command read its pipe until EOF, so it waited as long as a process
    # forked by when_ready (a metrics sidecar) lived.
    port, pidfile, sidecar = free_port(), tmp_path / "d.pid", tmp_path / "sidecar.pid"
    conf = tmp_path / "g.conf.py"
    conf.write_text("import os, time\n"
                    "def when_ready(server):\n"
                    "    pid = os.fork()\n"
                    "    if pid == 0:\n"
                    "        time.sleep(60)\n"
                    "        os._exit(0)\n"
                    f"    open({str(sidecar)!r}, 'w').write(str(pid))\n")
    started = time.monotonic()
    try:
        r = ferrule("compat_app:app", "-c", str(conf), "-b", f"127.0.0.1:{port}", "--daemon", "-p", str(pidfile),
                    timeout=50)
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - started < 20
        assert get(port, "/")[0] == 200
    finally:
        for f, sig in ((pidfile, signal.SIGTERM), (sidecar, signal.SIGKILL)):  # the sidecar has the master's handlers
            if f.exists():
                os.kill(int(f.read_text()), sig)


def test_daemon_start_up_error_is_the_command_s_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = ferrule("compat_app:app", "-b", f"127.0.0.1:{port}", "--daemon")
    assert r.returncode == 3, r.stderr
    assert "address already in use" in r.stderr.lower()


def test_capture_output_sends_the_app_s_prints_into_the_error_log(tmp_path):
    port = free_port()
    errlog = tmp_path / "err.log"
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "compat_app:app", "--chdir", str(APPS),
                             "-b", f"127.0.0.1:{port}", "--capture-output", "--error-logfile", str(errlog)],
                            stdout=open(out, "wb"), stderr=open(tmp_path / "stderr", "wb"))
    try:
        wait_until(lambda: _answers(port))
        get(port, "/print")
        wait_until(lambda: "to-stderr-by-the-app" in errlog.read_text())
        assert "printed-by-the-app" in errlog.read_text()
        assert "printed-by-the-app" not in out.read_text()
        # logrotate: rename, then USR1; captured output follows to the new file.
        errlog.rename(tmp_path / "err.log.1")
        proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: errlog.exists())

        def captured_again():
            get(port, "/print")
            return "printed-by-the-app" in errlog.read_text()
        wait_until(captured_again, step=0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_capture_output_with_stderr_as_the_error_log_changes_nothing(tmp_path):
    port = free_port()
    out, err = tmp_path / "out", tmp_path / "err"
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "compat_app:app", "--chdir", str(APPS),
                             "-b", f"127.0.0.1:{port}", "--capture-output"],
                            stdout=open(out, "wb"), stderr=open(err, "wb"))
    try:
        wait_until(lambda: _answers(port))
        get(port, "/print")
        wait_until(lambda: "printed-by-the-app" in out.read_text())
        wait_until(lambda: "to-stderr-by-the-app" in err.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


# Point 12: --help ------------------------------------------------------------------

def test_help_has_text_and_a_default_for_every_flag_and_an_epilog():
    from ferrule import cli
    parser = cli.build_parser()
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        assert action.help, action.option_strings
        assert "default" in action.help, action.option_strings
    r = ferrule("--help")
    assert r.returncode == 0
    for words in ("docs/migrating-from-gunicorn.md", "docs/signals.md", "TERM", "INT, QUIT", "HUP", "TTIN, TTOU",
                  "USR1", "USR2", "WINCH", "2  bad flag or setting", "4  the app could not be imported",
                  "3  an address could not be bound", "1  the on_starting hook raised", "0  stopped by a signal"):
        assert words in r.stdout, words
