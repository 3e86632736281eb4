"""The D-Bus interface of a server, declared once with its argument names.

txdbus declares a method by its signatures alone (``Method("ForcePush", "s",
"s")``) and introspects it with unnamed ``<arg>`` elements. Here each method,
signal and property is declared with the names of its arguments, and
:class:`NamedInterface` is a txdbus ``DBusInterface`` (it dispatches as one)
whose introspection XML carries those names, and ``const`` properties too.

``SERVER`` is ``org.vigo.Server1``; ``PROPERTIES`` is
``org.freedesktop.DBus.Properties`` with the argument names of its
specification (txdbus's own has none).
"""

from xml.sax.saxutils import quoteattr

from txdbus import interface

BUS_NAME = "org.vigo.Server"
OBJECT_PATH = "/org/vigo/Server"
INTERFACE = "org.vigo.Server1"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"


def _signature(args):
    return "".join(sig for _, sig in args)


class NamedMethod(interface.Method):
    """A method with named arguments: ``inputs`` and ``outputs`` are
    ``(name, signature)`` pairs."""

    __slots__ = ("inputs", "outputs")

    def __init__(self, name, inputs=(), outputs=()):
        interface.Method.__init__(self, name, _signature(inputs), _signature(outputs))
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)


class NamedSignal(interface.Signal):
    """A signal with named arguments (``(name, signature)`` pairs)."""

    __slots__ = ("args",)

    def __init__(self, name, args=()):
        interface.Signal.__init__(self, name, _signature(args))
        self.args = tuple(args)


class ReadProperty(interface.Property):
    """A read-only property; ``emits`` is ``true`` (PropertiesChanged carries its
    new value) or ``const`` (it never changes while the object is exported)."""

    __slots__ = ()

    def __init__(self, name, sig, emits="true"):
        interface.Property.__init__(self, name, sig)
        if emits not in ("true", "const"):
            raise ValueError("emits is true or const, not %r" % (emits,))
        self.emits = emits


class NamedInterface(interface.DBusInterface):
    """A ``DBusInterface`` of named members, introspected with their names.
    Not registered in txdbus's process-wide cache of known interfaces."""

    def __init__(self, name, *members):
        interface.DBusInterface.__init__(self, name, *members, noRegister=True)

    @property
    def introspectionXml(self):
        lines = ["  <interface name=%s>" % (quoteattr(self.name),)]
        for method in sorted(self.methods.values(), key=lambda m: m.name):
            lines.append("    <method name=%s>" % (quoteattr(method.name),))
            lines.extend(_arg(name, sig, "in") for name, sig in method.inputs)
            lines.extend(_arg(name, sig, "out") for name, sig in method.outputs)
            lines.append("    </method>")
        for signal in sorted(self.signals.values(), key=lambda s: s.name):
            lines.append("    <signal name=%s>" % (quoteattr(signal.name),))
            lines.extend(_arg(name, sig) for name, sig in signal.args)
            lines.append("    </signal>")
        for prop in sorted(self.properties.values(), key=lambda p: p.name):
            lines.append("    <property name=%s type=%s access=%s>" % (
                quoteattr(prop.name), quoteattr(prop.sig), quoteattr(prop.access)))
            lines.append('      <annotation name="org.freedesktop.DBus.Property.'
                         'EmitsChangedSignal" value=%s/>' % (quoteattr(prop.emits),))
            lines.append("    </property>")
        lines.append("  </interface>")
        return "\n".join(lines)


def _arg(name, sig, direction=None):
    way = "" if direction is None else " direction=%s" % (quoteattr(direction),)
    return "      <arg name=%s type=%s%s/>" % (quoteattr(name), quoteattr(sig), way)


#: The properties of ``org.vigo.Server1``: name, D-Bus type, and whether it
#: changes while the server runs (``true``: sampled, PropertiesChanged) or not.
SERVER_PROPERTIES = (
    ReadProperty("ServerId", "s", "const"),
    ReadProperty("Mode", "s", "const"),
    ReadProperty("Role", "s"),
    ReadProperty("Epoch", "u"),
    ReadProperty("EnvoysTotal", "u"),
    ReadProperty("EnvoysActive", "u"),
    ReadProperty("EnvoysOnline", "u"),
    ReadProperty("EnvoysConnected", "u"),
)

SERVER = NamedInterface(
    INTERFACE,
    NamedMethod("Status", outputs=[("status", "a{sv}")]),
    NamedMethod("ForcePush", inputs=[("envoy", "s")], outputs=[("delivered", "s")]),
    NamedSignal("EnvoyEnrolled", [("envoy_id", "s"), ("hostname", "s")]),
    *SERVER_PROPERTIES,
)

PROPERTIES = NamedInterface(
    PROPERTIES_INTERFACE,
    NamedMethod("Get", inputs=[("interface_name", "s"), ("property_name", "s")],
                outputs=[("value", "v")]),
    NamedMethod("GetAll", inputs=[("interface_name", "s")],
                outputs=[("properties", "a{sv}")]),
    NamedMethod("Set", inputs=[("interface_name", "s"), ("property_name", "s"),
                               ("value", "v")]),
    NamedSignal("PropertiesChanged", [("interface_name", "s"),
                                      ("changed_properties", "a{sv}"),
                                      ("invalidated_properties", "as")]),
)
