echo "shop: hello"
