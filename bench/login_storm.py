"""Login-storm fairness: other users' sign-in latency idle and during a storm of wrong-password
guesses from one client address. Run by scripts/login-storm.sh against a running mesh whose
edge trusts 127.0.0.1 as a proxy (each side gets its own address via X-Forwarded-For) and
whose rate limits and sign-in locks are lifted, so that only the hashing pool is measured."""

import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request

BASE = sys.argv[1]
GUESSES = int(sys.argv[2]) if len(sys.argv) > 2 else 300
PASSWORD = "storm-bench-password"


def post(path, body, client_ip):
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-forwarded-for": client_ip},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            status = answer.status
    except urllib.error.HTTPError as err:
        status = err.code
    return status, time.perf_counter() - started


def sign_ins(phones, rounds):
    times = []
    for _ in range(rounds):
        for i, phone in enumerate(phones):
            status, took = post("/v1/auth/login", {"phone": phone, "password": PASSWORD}, f"198.51.100.{i + 1}")
            assert status == 200, status
            times.append(took * 1000)
    return times


def summary(times):
    times = sorted(times)
    return {"p50_ms": round(statistics.median(times), 1), "p99_ms": round(times[int(len(times) * 0.99) - 1], 1), "n": len(times)}


phones = [f"+1777{int(time.time()) % 100000:05d}{i:02d}" for i in range(5)]
for i, phone in enumerate(phones):
    status, _ = post("/v1/auth/register", {"phone": phone, "password": PASSWORD, "nickname": f"u{i}"}, f"198.51.100.{i + 1}")
    assert status == 201, status

idle = sign_ins(phones, 8)

storm_done = threading.Event()


def storm():
    # 300 guesses for one phone from one address, 32 in flight at once.
    target = phones[0]
    left = iter(range(GUESSES))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if next(left, None) is None:
                    return
            post("/v1/auth/login", {"phone": target, "password": "guess"}, "203.0.113.66")

    workers = [threading.Thread(target=worker) for _ in range(32)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    storm_done.set()


attacker = threading.Thread(target=storm)
attacker.start()
time.sleep(0.5)  # let the storm fill the pool before measuring
during = []
while not storm_done.is_set():
    during.extend(sign_ins(phones[1:], 1))
attacker.join()
print(json.dumps({"scenario": "login_storm", "guesses": GUESSES, "idle": summary(idle), "during_storm": summary(during)}))
