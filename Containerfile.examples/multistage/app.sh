#!/bin/sh
echo "app version @VERSION@"
