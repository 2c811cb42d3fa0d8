# Finds minires' dependencies. Included by the top-level CMakeLists.txt (find_package) and by
# the installed minires-config.cmake (find_dependency), so both find the same things.
include(CMakeFindDependencyMacro)
macro(_minires_find_dependency)
  if(CMAKE_FIND_PACKAGE_NAME STREQUAL "minires")  # inside find_package(minires)
    find_dependency(${ARGV})
  else()
    find_package(${ARGV} REQUIRED)
  endif()
endmacro()
_minires_find_dependency(Eigen3 3.4 NO_MODULE)
_minires_find_dependency(xsimd 8)
_minires_find_dependency(OpenMP COMPONENTS CXX)
_minires_find_dependency(ZLIB)

# Debian 12's xsimd 8.1 exports a target that links 'xtl' (xsimd was built with its optional
# xtl support) without finding xtl, and no xtl package ships: the link line would get '-lxtl'.
# minires does not use xtl, so drop that dangling name when no xtl target exists.
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_minires_xsimd_libs xsimd INTERFACE_LINK_LIBRARIES)
  if(_minires_xsimd_libs)
    list(REMOVE_ITEM _minires_xsimd_libs xtl)
    set_target_properties(xsimd PROPERTIES INTERFACE_LINK_LIBRARIES "${_minires_xsimd_libs}")
  endif()
  unset(_minires_xsimd_libs)
endif()
