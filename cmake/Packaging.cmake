# Debian packages with CPack (`make package`, tools/package/build): `cmkflow` (the install
# component of that name: program, shared library, Lua modules, workflows, docs, man page,
# completions) and `cmkflow-dev` (component `dev`: header, libcmkflow.so, cmkflow.pc).
# spec/package_spec.lua installs them into a fresh Debian 12 root and runs them there.
#
# Package for /usr: configure with -DCMAKE_INSTALL_PREFIX=/usr (tools/package/build does), so that
# GNUInstallDirs picks Debian's multiarch library directory (lib/x86_64-linux-gnu), where the
# stock lua5.4 also looks for the Lua module (lib/x86_64-linux-gnu/lua/5.4/cmkflow/core.so).

set(CMKFLOW_PACKAGE_MAINTAINER "cmkflow maintainers <maintainers@users.noreply.r-seed-4044abbe.example>"
    CACHE STRING "The Maintainer field of the Debian packages")
# Packages the program needs at run time that dpkg-shlibdeps cannot see because nothing links
# them (a Lua library loaded from /usr/share/lua/5.4, say): comma-separated Debian dependencies.
set(CMKFLOW_PACKAGE_EXTRA_DEPENDS "" CACHE STRING "Run-time Depends of the cmkflow package beyond its shared libraries")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cmkflow)
set(CPACK_PACKAGE_VENDOR cmkflow)
set(CPACK_PACKAGE_CONTACT "${CMKFLOW_PACKAGE_MAINTAINER}")
# CPack's own default, so that CPackDeb does not put it above each component's description (whose
# first line is that package's synopsis)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${CMAKE_PROJECT_NAME} built using CMake")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL cmkflow dev)

set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CMKFLOW_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)                # cmkflow_0.1.0_amd64.deb
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON) # control files 0644/0755 as dpkg-deb makes them
# Depends from the ELF files: dpkg-shlibdeps (dpkg-dev) reads each binary's NEEDED libraries
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# a shlibs file for libcmkflow.so.0: a package linking it gets `cmkflow (>= 0.1.0)`
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")

set(CPACK_DEBIAN_CMKFLOW_PACKAGE_NAME cmkflow)
set(CPACK_DEBIAN_CMKFLOW_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_CMKFLOW_PACKAGE_DEPENDS "${CMKFLOW_PACKAGE_EXTRA_DEPENDS}")
# TLS to Azure needs the CA bundle; the embedded emulator (cmkflow demo) does not, so Recommends
# as libcurl4 has it
set(CPACK_DEBIAN_CMKFLOW_PACKAGE_RECOMMENDS ca-certificates)
# dpkg runs ldconfig once after all packages are in (CPack also puts an ldconfig call in postinst
# and postrm, which lintian notes but which does no harm)
set(CPACK_DEBIAN_CMKFLOW_PACKAGE_CONTROL_EXTRA ${CMAKE_CURRENT_LIST_DIR}/debian/triggers)
# (a description line is at most 79 columns in the control file, after its leading space)
set(CPACK_DEBIAN_CMKFLOW_DESCRIPTION "${PROJECT_DESCRIPTION}
cmkflow automates cross-tenant customer-managed keys for Azure Storage:
an ISV's storage account, in the ISV's tenant, encrypted with a key in
the customer's Key Vault in the customer's tenant. A C core with Lua 5.4
embedded: Azure Resource Manager, Microsoft Graph and Key Vault clients,
resumable workflows journaled in SQLite, a two-party handoff, and an
embedded Azure emulator (cmkflow demo).
This package holds the cmkflow program, the libcmkflow shared library,
the Lua module for lua5.4 (require 'cmkflow'), the stock workflows and
the documentation.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME cmkflow-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# cmkflow.pc names these in Requires.private, which pkg-config resolves even for --cflags
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "cmkflow (= ${PROJECT_VERSION}), liblua5.4-dev, libcurl4-openssl-dev | libcurl-dev, libsqlite3-dev, libmicrohttpd-dev, libjansson-dev, libssl-dev")
set(CPACK_DEBIAN_DEV_DESCRIPTION "Header, link library and pkg-config file of libcmkflow
Everything to build a program against libcmkflow, the embeddable cmkflow
interpreter: cmkflow.h, libcmkflow.so and cmkflow.pc
(pkg-config --cflags --libs cmkflow).")

set(CPACK_PRE_BUILD_SCRIPTS ${CMAKE_CURRENT_LIST_DIR}/PackageStage.cmake) # man pages gzipped

include(CPack)
