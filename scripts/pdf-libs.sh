#!/usr/bin/env bash
# Installs the system libraries of PDF documents where it can (root + apt-get): Pango for WeasyPrint
# (the extra `pdf`, which prints the documents) and poppler-utils (pdftoppm, pdftotext), with which
# the tests look at the printed pages.
set -u
have_pdf_libs() { ldconfig -p 2>/dev/null | grep -q 'libpango-1.0.so' && ldconfig -p | grep -q 'libpangoft2-1.0.so' \
  && command -v pdftoppm >/dev/null 2>&1; }

if have_pdf_libs; then
  echo "pdf: Pango and poppler-utils present"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "pdf: installing Pango and poppler-utils (apt-get) for PDF documents"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 poppler-utils fonts-dejavu-core >/dev/null \
    || echo "pdf: could not install Pango/poppler-utils; --format pdf will say what is missing"
else
  echo "pdf: Pango or poppler-utils missing and no root/apt-get: install libpango-1.0-0 libpangoft2-1.0-0 poppler-utils"
fi
exit 0
