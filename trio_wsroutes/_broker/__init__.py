"""Topic brokers: who is subscribed to what, and fan-out of published frames."""

from ._base import Broker as Broker
from ._base import RunnableBroker as RunnableBroker
from ._base import Subscriber as Subscriber
from .memory import MemoryBroker as MemoryBroker
from .redis import RedisBroker as RedisBroker
from .redis import RedisBrokerStats as RedisBrokerStats
