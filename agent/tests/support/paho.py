# A small paho-mqtt 2.x harness for the agent's MQTT 5 tests (prepended to each test's
# script; argv[1] is the agent's port). Records messages with their subscription ids,
# SUBACK reason codes, PUBACK/PUBREC reason codes and CONNACK session-present.
import sys, time, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

PORT = int(sys.argv[1])


class C:
    def __init__(self, cid, v5=True, username=None, password=None):
        self.cid, self.v5, self.username, self.password = cid, v5, username, password
        self.got, self.subacks, self.pubacks = [], [], {}
        self.cond = threading.Condition()
        self.c = None
        self.will = None

    def _msg(self, c, u, m):
        ids = []
        if m.properties is not None and hasattr(m.properties, "SubscriptionIdentifier"):
            ids = list(m.properties.SubscriptionIdentifier)
        with self.cond:
            self.got.append((m.topic, m.payload.decode(), m.qos, int(m.retain), sorted(ids)))
            self.cond.notify_all()

    def _sub(self, c, u, mid, rcs, props):
        with self.cond:
            self.subacks.append([r.value for r in rcs])
            self.cond.notify_all()

    def _conn(self, c, u, flags, rc, props):
        with self.cond:
            self.connack = (int(flags.session_present), rc.value)
            self.cond.notify_all()

    def _pub(self, c, u, mid, rc, props):
        with self.cond:
            self.pubacks[mid] = rc.value
            self.cond.notify_all()

    def wait(self, pred, timeout=10):
        with self.cond:
            return self.cond.wait_for(pred, timeout=timeout)

    def connect(self, clean=True, expiry=None):
        proto = mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311
        kw = {} if self.v5 else {"clean_session": clean}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.cid, protocol=proto, **kw)
        self.c.on_message, self.c.on_subscribe = self._msg, self._sub
        self.c.on_connect, self.c.on_publish = self._conn, self._pub
        if self.username is not None:
            self.c.username_pw_set(self.username, self.password)
        if self.will is not None:
            self.c.will_set(*self.will)
        self.connack = None
        props = None
        if self.v5 and expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry
        if self.v5:
            self.c.connect("127.0.0.1", PORT, keepalive=0, clean_start=clean, properties=props)
        else:
            self.c.connect("127.0.0.1", PORT, keepalive=0)
        self.c.loop_start()
        assert self.wait(lambda: self.connack is not None), "no CONNACK"
        return self.connack

    def subscribe(self, filt, qos=1, sub_id=None, **opts):
        n = len(self.subacks)
        if self.v5:
            props = None
            if sub_id is not None:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sub_id
            self.c.subscribe(filt, options=SubscribeOptions(qos=qos, **opts), properties=props)
        else:
            self.c.subscribe(filt, qos)
        assert self.wait(lambda: len(self.subacks) > n), "no SUBACK"
        return self.subacks[n]

    def publish(self, topic, payload, qos=1, retain=False):
        info = self.c.publish(topic, payload.encode(), qos=qos, retain=retain)
        if qos > 0:
            assert self.wait(lambda: info.mid in self.pubacks), "no PUBACK/PUBREC"
            return self.pubacks[info.mid]
        return None

    def wait_msgs(self, n, timeout=10):
        self.wait(lambda: len(self.got) >= n, timeout)
        return list(self.got)

    def disconnect(self, expiry=None):
        props = None
        if self.v5 and expiry is not None:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = expiry
        self.c.disconnect(properties=props) if self.v5 else self.c.disconnect()
        self.c.loop_stop()
        time.sleep(0.2)  # the broker closes the session

    def drop(self):
        # No DISCONNECT: an abnormal end.
        self.c.loop_stop()
        self.c.socket().close()
        time.sleep(0.2)
