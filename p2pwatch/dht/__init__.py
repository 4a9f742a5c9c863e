"""The mainline DHT (BEP 5 and extensions): codecs, routing and traversal are sans-IO; ``node`` drives them."""
